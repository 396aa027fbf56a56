"""Explanation maps for test images: attention rollout for ViTs (arXiv 2005.00928), Grad-CAM for CNNs
(arXiv 1610.02391). The code lives in the submodules; `maps.explain_images` picks the method."""
