"""Ids per person on a synthetic crowd whose people are known: talking heads from the shared clips walk across a
blurred hamilton frame at different speeds (a third of a face width a frame and less), in both directions, some
crossing in front of others, one hidden by a passer-by for most of a second. Each tracked face is matched to the
walker whose head it covers, and the script prints, per walker, the ids it got and the frames it was found in, then
ids per person and swaps (an id found on two people).

    python benchmarks/crowd_ids.py [--frames 90] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stream.media.sources import Frame, MediaSource  # noqa: E402
from stream.perception.face_stage import LiveFaceStage  # noqa: E402
from stream.render.options import RenderOptions  # noqa: E402
from stream.render.pipeline import make_tracker  # noqa: E402

MEDIA = ROOT.parent / "shared" / "media"


@dataclass
class Walker:
    clip: str
    scale: float  # of the clip's frame
    x0: float  # px, the head's left edge on the first frame
    y: int
    speed: float  # px a frame, signed
    hidden: range = range(0)  # frames on which a passer-by covers the head


# scale: of a 480 px square around the clip's face (a face of about 190 px at 1.0)
WALKERS = [
    Walker("liveportrait_d20", 0.40, 20, 40, 12.0),
    Walker("liveportrait_d0", 0.36, 980, 60, -9.0),
    Walker("liveportrait_s18", 0.45, 300, 250, 6.0, hidden=range(30, 55)),  # behind a passer-by for 25 frames
    Walker("liveportrait_d20", 0.35, 1100, 200, -25.0),  # a third of its face's width a frame
    Walker("liveportrait_d0", 0.30, 520, 480, 2.0),
]


def _heads(walker: Walker, frames: int) -> list[np.ndarray]:
    """The clip's frames cut to their middle square (the face in it) and scaled, looped to `frames`."""
    with MediaSource(MEDIA / "videos" / f"{walker.clip}.mp4", keep_audio=False) as source:
        images = [f.image for f in source.frames()]
    h, w = images[0].shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    return [cv2.resize(i[y0:y0 + side, x0:x0 + side], None, fx=walker.scale * 480 / side,
                       fy=walker.scale * 480 / side, interpolation=cv2.INTER_AREA)
            for i in itertools.islice(itertools.cycle(images), frames)]


def crowd(frames: int) -> tuple[list[Frame], list[list[tuple[float, float, float, float] | None]]]:
    """The frames (1280x720) and, per frame, each walker's head square (x0, y0, x1, y1), None where it is out of the
    frame or hidden."""
    with MediaSource(MEDIA / "videos" / "face_recognition_short_hamilton_clip.mp4", keep_audio=False) as source:
        still = next(f.image for f in source.frames() if f.index == 230)
    background = cv2.GaussianBlur(cv2.resize(still, (1280, 720)), (0, 0), 4)
    heads = [_heads(w, frames) for w in WALKERS]
    out, truth = [], []
    for i in range(frames):
        image = background.copy()
        boxes: list[tuple[float, float, float, float] | None] = []
        coats = []
        for walker, images in zip(WALKERS, heads, strict=True):
            head = images[i]
            h, w = head.shape[:2]
            x = round(walker.x0 + i * walker.speed)
            if x < 0 or x + w > image.shape[1]:
                boxes.append(None)
                continue
            image[walker.y:walker.y + h, x:x + w] = head
            boxes.append((x, walker.y, x + w, walker.y + h))
            if i in walker.hidden:  # a passer-by's dark coat, the frame's height, a little wider than the head
                coats.append((x - w // 4, x + w + w // 4))
        for left, right in coats:
            image[:, max(0, left):right] = (40, 45, 60)
            boxes = [None if b is not None and left < (b[0] + b[2]) / 2 < right else b for b in boxes]
        out.append(Frame(i, i * 3000, Fraction(1, 90000), image))
        truth.append(boxes)
    return out, truth


def score(frames: list[Frame], truth: list[list[tuple[float, float, float, float] | None]]) -> dict[str, Any]:
    """The crowd tracked live with the default options: per walker the ids it got, the frames it was found in and
    those it was visible in; ids per person; swaps (ids found on two people)."""
    stage = LiveFaceStage(make_tracker(RenderOptions()), 2)
    ready = [*itertools.chain.from_iterable(stage.push(f) for f in frames), *stage.flush()]
    ids: dict[int, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    owners: dict[int, set[int]] = collections.defaultdict(set)
    for frame, faces, _ in ready:
        for face in faces:
            cx, cy = face.box.center
            # the walker whose head square holds the face's centre, the nearest to its middle where squares overlap
            holding = [(np.hypot(cx - (b[0] + b[2]) / 2, cy - (b[1] + b[3]) / 2), k)
                       for k, b in enumerate(truth[frame.index])
                       if b is not None and b[0] < cx < b[2] and b[1] < cy < b[3]]
            if holding:
                k = min(holding)[1]
                ids[k][face.track_id] += 1
                owners[face.track_id].add(k)
    rows = []
    for k, walker in enumerate(WALKERS):
        visible = sum(box is not None for box in (t[k] for t in truth))
        rows.append({"walker": k, "clip": walker.clip, "scale": walker.scale, "speed": walker.speed,
                     "ids": dict(ids[k]), "found": sum(ids[k].values()), "visible": visible})
    people = sum(1 for r in rows if r["ids"])
    return {"walkers": rows, "ids_per_person": sum(len(r["ids"]) for r in rows) / max(people, 1),
            "people": people, "swaps": sum(1 for owned in owners.values() if len(owned) > 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = score(*crowd(args.frames))
    for r in result["walkers"]:
        print(f"walker {r['walker']} ({r['clip']} x{r['scale']}, {r['speed']:+.0f} px/frame): ids {r['ids']}, "
              f"found in {r['found']} of {r['visible']} visible frames")
    print(f"ids per person {result['ids_per_person']:.2f} ({result['people']} people found), ids found on two "
          f"people: {result['swaps']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
