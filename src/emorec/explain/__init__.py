"""Explanations a person can look at: Grad-CAM heat maps over the image (`gradcam`), written for
image files (`explain`: the `emorec explain` command) and for an evaluation's most confident
mistakes (`mistakes`), laid out as grids of image and overlay pairs (`grid`).
"""
