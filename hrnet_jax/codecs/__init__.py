"""Keypoint codecs, computation only (as mmpose keeps ``codecs/``): training targets from
keypoints (encode) and keypoints from heatmaps (decode).

``heatmap``: the shared Gaussian / argmax / refinement helpers; ``msra``: MSRA and DARK
(``unbiased=True``); ``udp``: UDP; ``registry``: ``get_codec``.
"""
