"""Images in, results out: ``transforms`` (decoding and timm's eval preprocessing),
``imagenet`` (class names), ``decode`` (logits -> mask, heatmaps -> keypoints, as mmpose's
``codecs/`` keep it)."""
