"""Images in, results out: ``transforms`` (decoding and timm's eval preprocessing, and timm's
``resolve_model_data_config`` / ``create_transform``), ``imagenet`` (class names), ``decode``
(logits -> mask, heatmaps -> keypoints, as mmpose's ``codecs/`` keep it)."""

from hrnet_jax.data.transforms import create_transform, resolve_model_data_config

__all__ = ['create_transform', 'resolve_model_data_config']
