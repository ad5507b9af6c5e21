"""PyTorch HRNet checkpoints (official repo, timm, mmpretrain) <-> hrnet-jax checkpoint folders.

CLI: ``convert_official_weights`` (``hrnet_jax.convert.cli``). Python: ``convert_checkpoint``,
``to_pytorch``.
"""

from hrnet_jax.convert.api import ConversionResult, MismatchError, convert_checkpoint, to_pytorch
from hrnet_jax.convert.sources import ConversionError, read_source

__all__ = ['ConversionError', 'ConversionResult', 'MismatchError', 'convert_checkpoint',
           'read_source', 'to_pytorch']
