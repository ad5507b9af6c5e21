"""Rewrites of the ONNX graph jax2onnx writes, each computing the same values with fewer nodes.

jax2onnx lowers one jaxpr equation at a time, so two HRNet idioms reach onnxruntime as chains it
cannot optimize (profile: docs/benchmarks.md, "ONNX graph"):

- nearest upsampling (``hrnet_jax.models.layers.upsample_nearest``: ``jnp.repeat`` per axis) is
  ``Reshape`` (insert a unit axis) -> ``Expand`` (broadcast it to the factor) -> ``Reshape``
  (merge it), each shape computed at run time by ``Shape`` / ``Gather`` / ``Concat`` nodes
  because of the symbolic batch. The chain is a layout barrier: onnxruntime's transpose
  optimizer cannot move the NHWC <-> NCHW ``Transpose`` nodes jax2onnx puts around every conv
  through it, so they stay, with a reorder out of and back into the NCHWc conv layout at each.
  ``nearest_resize`` replaces each chain by one ``Resize`` (``nearest``, ``asymmetric`` source
  coordinates, ``floor``: ``src = floor(dst / factor)``, which is exactly the repeat);
  ``merge_resizes`` joins the H and W resizes of one upsampling; then the transposes cancel.
- ``BatchNormalization`` after each ``Conv``: ``fold_batchnorm`` folds it into the conv's weights
  and bias (``hrnet_jax.runtime.fold``'s arithmetic: float64, one float32 rounding per weight),
  so that runtimes without a conv + BN fusion of their own also run one op.

- the classifier's global average pool (``jnp.mean`` over H and W of an NHWC tensor) is a
  ``ReduceMean`` that onnxruntime runs in plain NCHW after a reorder out of its NCHWc layout;
  ``global_average_pool`` makes it ``Transpose`` (to NCHW) -> ``GlobalAveragePool`` ->
  ``Flatten``, which runs on NCHWc directly once the transposes cancel, as in timm's export.

``simplify`` applies all four and drops the nodes no output depends on any more; the export's
verification (``hrnet_jax.export.core.verify``) then proves the rewritten graph against the JAX
model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported when an ONNX export runs (hrnet_jax.export.onnx), not before
  import onnx


class _Graph:
  """Index of a ``GraphProto``: producers, consumers and constant values by value name."""

  def __init__(self, graph: onnx.GraphProto):
    from onnx import numpy_helper

    self.to_array, self.from_array = numpy_helper.to_array, numpy_helper.from_array
    self.graph = graph
    self.inits = {i.name: i for i in graph.initializer}
    self.producer = {o: n for n in graph.node for o in n.output}
    self.consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
      for i in n.input:
        self.consumers.setdefault(i, []).append(n)
    self.outputs = {o.name for o in graph.output}

  def const(self, name: str) -> np.ndarray | None:
    if name in self.inits:
      return self.to_array(self.inits[name])
    node = self.producer.get(name)
    if node is not None and node.op_type == 'Constant' and node.attribute[0].name == 'value':
      return self.to_array(node.attribute[0].t)
    return None

  def shape_dims(self, name: str) -> list[int | None] | None:
    """The dims of a shape tensor ``name``: a constant, or a ``Concat`` of 1-element pieces
    whose constant ones are known (None for a piece computed at run time, e.g. the batch)."""
    value = self.const(name)
    if value is not None:
      return [int(v) for v in value.reshape(-1)]
    node = self.producer.get(name)
    if node is None or node.op_type != 'Concat':
      return None
    dims: list[int | None] = []
    for piece in node.input:
      value = self.const(piece)
      if value is None:
        dims.append(None)
      elif value.size == 1:
        dims.append(int(value.reshape(-1)[0]))
      else:
        return None
    return dims

  def sole_consumer(self, name: str, op_type: str) -> onnx.NodeProto | None:
    """The one consumer of ``name`` of type ``op_type`` (others may only be ``Shape`` nodes)."""
    found = [n for n in self.consumers.get(name, []) if n.op_type != 'Shape']
    if len(found) == 1 and found[0].op_type == op_type and name not in self.outputs:
      return found[0]
    return None

  def add_const(self, name: str, value: np.ndarray) -> str:
    self.graph.initializer.append(self.from_array(value, name))
    return name


def _resize(g: _Graph, x: str, out: str, scales: np.ndarray, name: str) -> onnx.NodeProto:
  from onnx import helper

  return helper.make_node(
    'Resize',
    [x, '', g.add_const(name + '_scales', scales.astype(np.float32))],
    [out],
    name=name,
    mode='nearest',
    coordinate_transformation_mode='asymmetric',
    nearest_mode='floor',
  )


def _repeat_factor(g: _Graph, reshape1, expand, reshape2) -> tuple[int, int] | None:
  """``(axis, factor)`` if ``reshape1 -> expand -> reshape2`` repeats one axis of a rank-4
  tensor ``factor`` times (``[.., n, ..] -> [.., n, 1, ..] -> [.., n, f, ..] -> [.., n*f, ..]``)."""
  inserted = g.shape_dims(reshape1.input[1])
  expanded = g.shape_dims(expand.input[1])
  merged = g.shape_dims(reshape2.input[1])
  if inserted is None or expanded is None or merged is None or len(inserted) != 5:
    return None
  if len(expanded) != 5 or len(merged) != 4:
    return None
  diff = [k for k in range(5) if inserted[k] != expanded[k]]
  if len(diff) != 1 or diff[0] == 0 or inserted[diff[0]] != 1 or not expanded[diff[0]]:
    return None
  k, factor = diff[0], expanded[diff[0]]
  n = inserted[k - 1]
  if n is None or merged[k - 1] != n * factor:
    return None
  if merged[: k - 1] != inserted[: k - 1] or merged[k:] != inserted[k + 1 :]:
    return None
  return k - 1, factor


def nearest_resize(graph: onnx.GraphProto) -> int:
  """Replaces every ``Reshape -> Expand -> Reshape`` axis repeat by a nearest ``Resize``;
  returns the count."""
  g = _Graph(graph)
  count = 0
  for expand in [n for n in graph.node if n.op_type == 'Expand']:
    reshape1 = g.producer.get(expand.input[0])
    if reshape1 is None or reshape1.op_type != 'Reshape':
      continue
    if g.sole_consumer(reshape1.output[0], 'Expand') is not expand:
      continue
    reshape2 = g.sole_consumer(expand.output[0], 'Reshape')
    if reshape2 is None:
      continue
    found = _repeat_factor(g, reshape1, expand, reshape2)
    if found is None:
      continue
    axis, factor = found
    scales = np.ones(4)
    scales[axis] = factor
    node = _resize(g, reshape1.input[0], reshape2.output[0], scales, f'repeat_resize_{count}')
    graph.node.insert(list(graph.node).index(reshape2), node)
    graph.node.remove(reshape2)
    count += 1
  return count


def _resize_scales(g: _Graph, node) -> np.ndarray | None:
  """The scales of a ``nearest_resize`` node, None for any other node."""
  if node is None or node.op_type != 'Resize' or not node.name.startswith('repeat_resize_'):
    return None
  return g.const(node.input[2])


def merge_resizes(graph: onnx.GraphProto) -> int:
  """Joins each ``nearest_resize`` whose only consumer is another into one (integer factors
  along different axes compose exactly); returns the count."""
  count = 0
  while True:
    g = _Graph(graph)
    for second in graph.node:
      second_scales = _resize_scales(g, second)
      first = g.producer.get(second.input[0])
      first_scales = _resize_scales(g, first)
      if second_scales is None or first_scales is None:
        continue
      if g.sole_consumer(first.output[0], 'Resize') is not second:
        continue
      node = _resize(
        g, first.input[0], second.output[0], first_scales * second_scales, second.name + 'm'
      )
      graph.node.insert(list(graph.node).index(second), node)
      graph.node.remove(second)
      count += 1
      break
    else:
      return count


def fold_batchnorm(graph: onnx.GraphProto) -> int:
  """Folds each inference ``BatchNormalization`` that is a ``Conv``'s only consumer into that
  conv (constant weights, bias and statistics); returns the count."""
  g = _Graph(graph)
  count = 0
  for bn in [n for n in graph.node if n.op_type == 'BatchNormalization']:
    conv = g.producer.get(bn.input[0])
    if conv is None or conv.op_type != 'Conv' or len(bn.output) != 1:
      continue
    if g.sole_consumer(conv.output[0], 'BatchNormalization') is not bn:
      continue
    if any(t.name == 'training_mode' and t.i for t in bn.attribute):
      continue
    params = [g.const(name) for name in bn.input[1:5]]
    weight = g.const(conv.input[1])
    bias = g.const(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
    if weight is None or any(p is None for p in params) or (len(conv.input) > 2 and bias is None):
      continue
    eps = next((t.f for t in bn.attribute if t.name == 'epsilon'), 1e-5)
    gamma, beta, mean, var = (np.asarray(p, np.float64) for p in params)
    # float64 so that folding adds one float32 rounding per weight (as runtime/fold.py).
    scale = gamma / np.sqrt(var + np.float64(np.float32(eps)))
    bias = np.zeros(weight.shape[0]) if bias is None else np.asarray(bias, np.float64)
    new_weight = np.asarray(weight, np.float64) * scale.reshape(-1, 1, 1, 1)
    new_bias = (bias - mean) * scale + beta
    name = conv.output[0]
    conv.input[1:] = [
      g.add_const(name + '_folded_w', new_weight.astype(weight.dtype)),
      g.add_const(name + '_folded_b', new_bias.astype(weight.dtype)),
    ]
    conv.output[0] = bn.output[0]
    graph.node.remove(bn)
    count += 1
  return count


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
  """The rank of every value ONNX shape inference can tell (the file records none)."""
  from onnx import shape_inference

  graph = shape_inference.infer_shapes(model).graph
  values = [*graph.value_info, *graph.input, *graph.output]
  return {
    v.name: len(v.type.tensor_type.shape.dim) for v in values if v.type.HasField('tensor_type')
  }


def global_average_pool(graph: onnx.GraphProto, ranks: dict[str, int]) -> int:
  """Replaces each ``ReduceMean`` over axes 1 and 2 (not kept) of a rank-4 tensor (``ranks``:
  value name -> rank) by ``Transpose`` -> ``GlobalAveragePool`` -> ``Flatten``; returns the
  count."""
  from onnx import helper

  g = _Graph(graph)
  count = 0
  for mean in [n for n in graph.node if n.op_type == 'ReduceMean']:
    attrs = {a.name: a for a in mean.attribute}
    axes = g.const(mean.input[1]) if len(mean.input) > 1 and mean.input[1] else None
    if axes is None and 'axes' in attrs:
      axes = np.asarray(attrs['axes'].ints)
    keepdims = attrs['keepdims'].i if 'keepdims' in attrs else 1
    if axes is None or sorted(int(a) for a in axes.reshape(-1)) != [1, 2] or keepdims:
      continue
    if 'noop_with_empty_axes' in attrs or ranks.get(mean.input[0]) != 4:
      continue
    name = f'global_average_pool_{count}'
    nodes = [
      helper.make_node(
        'Transpose', [mean.input[0]], [name + '_nchw'], name=name + '_t', perm=[0, 3, 1, 2]
      ),
      helper.make_node('GlobalAveragePool', [name + '_nchw'], [name + '_pooled'], name=name),
      helper.make_node('Flatten', [name + '_pooled'], [mean.output[0]], name=name + '_f', axis=1),
    ]
    at = list(graph.node).index(mean)
    graph.node.remove(mean)
    for k, node in enumerate(nodes):
      graph.node.insert(at + k, node)
    count += 1
  return count


def prune(graph: onnx.GraphProto) -> int:
  """Drops the nodes and initializers no graph output depends on; returns the nodes dropped."""
  g = _Graph(graph)
  live: set[str] = set(g.outputs)
  keep = []
  for node in reversed(graph.node):
    if any(o in live for o in node.output):
      keep.append(node)
      live.update(i for i in node.input if i)
  dropped = len(graph.node) - len(keep)
  del graph.node[:]
  graph.node.extend(reversed(keep))
  inits = [i for i in graph.initializer if i.name in live]
  del graph.initializer[:]
  graph.initializer.extend(inits)
  return dropped


def simplify(model: onnx.ModelProto) -> dict[str, int]:
  """All the rewrites above, in place; returns how many of each were made."""
  graph = model.graph
  counts = {'nearest_resize': nearest_resize(graph)}
  counts['pruned_nodes'] = prune(graph)  # the replaced chains still consume what merging needs
  counts['merge_resizes'] = merge_resizes(graph)
  counts['fold_batchnorm'] = fold_batchnorm(graph)
  counts['global_average_pool'] = global_average_pool(graph, _ranks(model))
  counts['pruned_nodes'] += prune(graph)
  return counts
