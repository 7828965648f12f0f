"""The render: the per-frame renderer (recast, fade, hold, paste, badge), its options, the threads that decode
and encode beside it, and the file-to-file pipeline."""
