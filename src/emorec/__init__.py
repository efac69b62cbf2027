"""emorec: train, evaluate and serve image emotion classifiers."""

__version__ = "0.1.0"

MIKELS_EMOTIONS = (
    "amusement", "anger", "awe", "contentment",
    "disgust", "excitement", "fear", "sadness",
)
