"""Finding and following faces: the detectors and landmark models (MediaPipe's on LiteRT, dlib's), the trackers
with stable ids and shot cuts, the track set and its file, the STIT crop quads and their smoothing."""
