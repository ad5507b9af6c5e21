"""PyTorch HRNet checkpoints (official repo, timm, mmpretrain) <-> hrnet-jax checkpoint folders.

CLI: ``convert_official_weights`` (``convert.cli``). Python: ``convert_checkpoint``,
``to_pytorch``.
"""

from convert.core import ConversionResult, MismatchError, convert_checkpoint, to_pytorch
from convert.sources import ConversionError, read_source

__all__ = ['ConversionError', 'ConversionResult', 'MismatchError', 'convert_checkpoint',
           'read_source', 'to_pytorch']
