"""The MediaPipe model files Recast runs on LiteRT, found by path and never fetched at run time.

They are Apache-2.0 files that ship inside the `mediapipe==0.10.21` wheel on PyPI (later wheels carry none). That
wheel needs numpy<2, so it is never installed: the set-up (`make install`, the Dockerfiles) downloads it and
`python -m stream.perception.model_files install WHEEL` copies the few files Recast uses into
``<venv>/share/recast/mediapipe``, checking each against the sha256 pinned here. ``$RECAST_MEDIAPIPE`` names
another folder.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

from engines.errors import InputError

MEDIAPIPE_WHEEL = "mediapipe==0.10.21"
# name -> (path inside the wheel, sha256 of the file)
MEDIAPIPE_FILES: dict[str, tuple[str, str]] = {
    "face_detection_full_range_sparse": (
        "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1"),
    "face_landmark": (
        "mediapipe/modules/face_landmark/face_landmark.tflite",
        "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"),
    "iris_landmark": (
        "mediapipe/modules/iris_landmark/iris_landmark.tflite",
        "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f"),
    "selfie_segmentation": (
        "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
        "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"),
}


class ModelMissing(InputError):
    """A model file that is not where the set-up puts it; the message says where it looked and what to run."""


def mediapipe_folder() -> Path:
    env = os.environ.get("RECAST_MEDIAPIPE")
    return Path(env) if env else Path(sys.prefix) / "share" / "recast" / "mediapipe"


def mediapipe_model(name: str) -> Path:
    """Path of one of MEDIAPIPE_FILES, or ModelMissing naming the folder and the set-up step."""
    if name not in MEDIAPIPE_FILES:
        raise ModelMissing(f"no MediaPipe model called {name!r} (known: {', '.join(MEDIAPIPE_FILES)})")
    path = mediapipe_folder() / f"{name}.tflite"
    if not path.is_file():
        raise ModelMissing(f"{path}: missing; `make install` puts the MediaPipe models there (pip download "
                           f"{MEDIAPIPE_WHEEL} --no-deps, then python -m stream.perception.model_files install WHEEL)")
    return path


def install_from_wheel(wheel: Path, folder: Path | None = None) -> list[Path]:
    """Copy the MediaPipe models out of the wheel, each checked against its pinned sha256."""
    folder = folder or mediapipe_folder()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    with zipfile.ZipFile(wheel) as archive:
        for name, (member, digest) in MEDIAPIPE_FILES.items():
            data = archive.read(member)
            actual = hashlib.sha256(data).hexdigest()
            if actual != digest:
                raise ModelMissing(f"{wheel}: {member} has sha256 {actual}, expected {digest}")
            target = folder / f"{name}.tflite"
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
            written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream.perception.model_files", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    install = sub.add_parser("install", help="copy the MediaPipe models out of a downloaded mediapipe wheel")
    install.add_argument("wheel", type=Path)
    install.add_argument("--to", type=Path, default=None, help="folder (default: <prefix>/share/recast/mediapipe)")
    args = parser.parse_args(argv)
    try:
        for path in install_from_wheel(args.wheel, args.to):
            print(path)
    except (ModelMissing, OSError, KeyError, zipfile.BadZipFile) as err:
        print(f"python -m stream.perception.model_files: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
