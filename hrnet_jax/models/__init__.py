"""The architecture, and nothing else: HRNet as Flax NNX modules, NHWC.

``configs`` (variants as data), ``layers`` (conv / BN / residual blocks), ``resize`` (fuse
upsampling), ``hrnet`` (``HighResolutionNet``, the backbone and classifier), ``necks`` and
``heads`` (HRNetV1 / V2 / V2p representations), ``dense`` (segmentation, pose and pyramid models).
These modules import only jax, flax, numpy and the standard library: no file I/O.
"""
