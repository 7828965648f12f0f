"""The playback service: HTTP API, WebRTC sessions, the preview page and metrics (`recast serve`)."""
