"""What the command modules (main, bake, casts, engines) share: argument types, options and the progress bar."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engines.errors import InputError
from stream.perception.stills import DEFAULT_DETECTOR, DETECTORS


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_detector_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR,
                   help="mediapipe: BlazeFace and the face mesh on LiteRT (Apache-2.0 models, the default); "
                        "hog: dlib's HOG detector and 68-point model (its model's licence excludes commercial use)")


def progress_bar(total: int, desc: str, unit: str = "frame") -> Any:
    """A tqdm bar on stderr, off when stderr is not a terminal (DESIGN.md 3.1)."""
    from tqdm import tqdm

    return tqdm(total=total or None, desc=desc, unit=unit, file=sys.stderr, disable=not sys.stderr.isatty())


class UsageError(InputError):
    """Bad usage or bad input: exit status 2."""


def demo_location() -> str:
    from stream.cli.demo_title import demo_title_path

    return str(demo_title_path())
