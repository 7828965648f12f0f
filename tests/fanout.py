"""A job for the fan-out test that Ray's workers can import (`tests.fanout`; pytest's own name for a test module
is not importable there)."""

from __future__ import annotations

import os


def square_with_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()
