"""HRNet checkpoints of other libraries <-> hrnet-jax checkpoint folders.

CLI: ``convert_official_weights`` (``hrnet_jax.convert.cli``). Python: ``convert_checkpoint``,
``to_pytorch``. One job per module, each importing only those below it:

- ``cli``: the ``convert_official_weights`` command line;
- ``api``: one conversion (read, detect the layout, map, build ``config.json``, write once) and the
  exports ``to_pytorch`` / ``to_paddle``;
- ``classify``: classification layouts (official, timm, mmpretrain, PaddleClas) -> a Flax
  ``HighResolutionNet``;
- ``dense``: dense layouts (mmseg, mmpose, mmdet, HRNet-Semantic-Segmentation,
  deep-high-resolution-net) and ``--backbone-only`` -> a Flax ``DenseHRNet``;
- ``mapping``: what those two share: the strict key check, the Flax cast, the ``source`` record
  of ``config.json`` and ``ConversionResult``;
- ``layouts``: one key table per layout and the one layout detection (``layouts.official``:
  Flax path <-> official key; ``layouts.mmpretrain``, ``layouts.paddle``, ``layouts.dense``);
- ``arch``: the HRNet variant of an official-layout state_dict;
- ``sources``: reading a file or a hub id into NumPy arrays;
- ``pdparams``: the restricted ``.pdparams`` reader and the writer.
"""

from hrnet_jax.convert.api import convert_checkpoint, to_pytorch
from hrnet_jax.convert.mapping import ConversionResult
from hrnet_jax.convert.sources import ConversionError, read_source
from hrnet_jax.pretrained.state import CheckpointMismatchError

__all__ = [
  'CheckpointMismatchError',
  'ConversionError',
  'ConversionResult',
  'convert_checkpoint',
  'read_source',
  'to_pytorch',
]
