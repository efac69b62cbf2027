"""Faces in photos: find each face (`detect`), cut it out upright (`crop`), classify the crops
with a face-trained run (`predict`), draw the result (`annotate`), and evaluate on photos
(`dataset`). `collage` builds multi-face test photos with known boxes for measuring detectors.
"""
