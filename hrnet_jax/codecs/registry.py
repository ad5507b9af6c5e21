"""The heatmap codecs by name, as configs and command lines give them."""

from __future__ import annotations

from hrnet_jax.codecs.heatmap import HeatmapCodec
from hrnet_jax.codecs.msra import MSRAHeatmap
from hrnet_jax.codecs.udp import UDPHeatmap

CODECS = {'msra': MSRAHeatmap, 'udp': UDPHeatmap}


def get_codec(name: str, **kwargs) -> HeatmapCodec:
  """The codec ``name`` (``'msra'``, ``'udp'``; DARK is ``'msra'`` with ``unbiased=True``) built
  with ``kwargs`` (its constructor's arguments). Raises ``ValueError`` naming an unknown codec."""
  if name not in CODECS:
    raise ValueError(f'codec: {name!r} is not one of {", ".join(CODECS)}')
  return CODECS[name](**kwargs)
