"""Video: frames decoded as a stream, faces tracked across them, emotions over time."""
