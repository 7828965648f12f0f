"""Recast's streaming pipeline.

OpenCV's worker threads wait for their next job by spinning, not sleeping. The live path runs its stages on
threads of their own (decode, tracking, the faces, encode), so a spinning worker takes a core from a stage with
work to do: on a 2-core machine the spinning cost 6 ms of CPU per 720p frame (38 against 32) for no gain in speed.
It is turned off here, before OpenCV is first loaded; an operator's own setting of these variables is kept."""

import os

for _name in ("OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER", "OPENCV_THREAD_POOL_ACTIVE_WAIT_MAIN"):
    os.environ.setdefault(_name, "0")
