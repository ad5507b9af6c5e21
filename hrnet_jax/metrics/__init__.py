"""Evaluation metrics, computation only (as mmseg / mmpose keep ``evaluation/metrics``).

``segmentation``: per-class intersection / union areas and mIoU, aAcc, mAcc, mDice (mmseg
``IoUMetric``). ``keypoints``: OKS, OKS-NMS and the top-down rescoring and the flip test's heatmap flip (mmpose
``evaluation/functional``).
"""
