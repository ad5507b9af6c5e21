"""Test-time inference modes over a model's apply function (as mmseg's ``EncoderDecoder``
``whole`` / ``slide`` inference and its test-time augmentation; ``pose``: mmpose's top-down flip
test and the back-projection of crop keypoints)."""
