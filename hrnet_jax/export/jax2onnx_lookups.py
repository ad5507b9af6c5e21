"""Constant-time graph lookups for jax2onnx 0.17.1: a speed workaround that changes no answer.

Why: jax2onnx asks three questions of its graph with a scan of the whole graph each time.

- ``converter.optimizer_graph_utils._producer_node(nodes, value)`` and ``_consumer_nodes``: the
  node that produces / consumes ``value``, checked to belong to ``nodes`` (a ``list(graph)``
  snapshot) by building ``{id(n) for n in nodes}`` on *every* call. The optimizer pass
  ``remove_redundant_transpose_pairs_ir`` asks them for every node of a sweep and restarts the
  sweep after each rewrite (one per cancelled Transpose pair, hundreds for HRNet), so the pass is
  cubic in the graph size (docs/export.md, "Choosing the ONNX path").
- ``converter.output_binding._value_is_graph_connected(ctx, value)``: after each jaxpr equation
  is lowered, whether its output is a graph input, initializer or node output, by scanning all
  of them: quadratic in the number of equations.

What: for the duration of one ``to_onnx`` call, each function is wrapped. The wrapper makes the
test the original makes first, in O(1), and returns the same answer when it passes: the id set
of a snapshot list is built once per list (the cache keeps the list alive, so its id is not
reused, and checks its length; jax2onnx 0.17.1 takes a fresh ``list(graph)`` snapshot per sweep
and never mutates one in place); a value whose producer node is in the builder's graph
(``producer.graph is ctx.builder.nodes``) is one of that graph's node outputs, which is what the
original's scan finds. Every other case calls the original. So every answer is jax2onnx's own,
and the ONNX files are byte-identical with and without the wrappers (checked for hrnet_w18_small
and hrnet_w18; ``tests/export/test_export.py`` checks it on a small graph).

Other jax2onnx versions run unwrapped (correct, slower): the wrappers mirror 0.17.1's code
(``optimizer_graph_utils.py``, ``output_binding.py``), which another version may have changed.
The proper fix (an index from value to node, or no restart per rewrite) belongs upstream.
"""

from __future__ import annotations

import contextlib
from importlib import metadata
from typing import Any, Iterator

PATCHED_VERSION = '0.17.1'
_MAX_CACHED_SNAPSHOTS = 4  # a sweep uses one or two snapshots (``nodes``, ``live_nodes``)


class _SnapshotIds:
  """``{id(n) for n in nodes}``, built once per snapshot list."""

  def __init__(self):
    self._cache: dict[int, tuple[list, int, set[int]]] = {}

  def __call__(self, nodes) -> set[int]:
    if type(nodes) is not list:  # not a snapshot: no caching, as the original
      return {id(n) for n in nodes}
    hit = self._cache.get(id(nodes))
    if hit is None or hit[0] is not nodes or hit[1] != len(nodes):
      if len(self._cache) >= _MAX_CACHED_SNAPSHOTS:
        self._cache.clear()
      hit = self._cache[id(nodes)] = (nodes, len(nodes), {id(n) for n in nodes})
    return hit[2]


def _wrappers(ir, graph_utils, output_binding) -> dict[str, Any]:
  ids = _SnapshotIds()
  producer_node = graph_utils._producer_node
  consumer_nodes = graph_utils._consumer_nodes
  is_graph_connected = output_binding._value_is_graph_connected

  def fast_producer_node(nodes, value):
    if isinstance(value, ir.Value):
      producer = value.producer()
      if isinstance(producer, ir.Node) and id(producer) in ids(nodes):
        return producer
    return producer_node(nodes, value)

  def fast_consumer_nodes(nodes, value):
    if isinstance(value, ir.Value):
      consumers = value.consumers()
      if consumers and all(isinstance(c, ir.Node) for c in consumers):
        current = ids(nodes)
        found = [c for c in consumers if id(c) in current]
        if found:
          return found
    return consumer_nodes(nodes, value)

  def fast_value_is_graph_connected(ctx, value):
    producer = value.producer()
    if producer is not None and producer.graph is ctx.builder.nodes:
      return True
    return is_graph_connected(ctx, value)

  return {
    '_producer_node': fast_producer_node,
    '_consumer_nodes': fast_consumer_nodes,
    '_value_is_graph_connected': fast_value_is_graph_connected,
  }


@contextlib.contextmanager
def fast_lookups() -> Iterator[bool]:
  """Within the block, jax2onnx (``PATCHED_VERSION`` only) uses the wrapped lookups; yields
  whether it does. The modules' attributes are restored on exit."""
  try:
    version = metadata.version('jax2onnx')
  except metadata.PackageNotFoundError:  # imported from a source tree: unknown code
    version = None
  if version != PATCHED_VERSION:
    yield False
    return
  import onnx_ir as ir
  from jax2onnx.converter import (
    conv_transpose_bias_folding,
    ir_optimizations,
    optimizer_graph_utils,
    output_binding,
  )

  wrappers = _wrappers(ir, optimizer_graph_utils, output_binding)
  # Each module that imported a looked-up function by name holds its own reference.
  modules = (optimizer_graph_utils, ir_optimizations, conv_transpose_bias_folding, output_binding)
  saved = [(m, name, getattr(m, name)) for m in modules for name in wrappers if hasattr(m, name)]
  try:
    for module, name, _ in saved:
      setattr(module, name, wrappers[name])
    yield True
  finally:
    for module, name, original in saved:
      setattr(module, name, original)
