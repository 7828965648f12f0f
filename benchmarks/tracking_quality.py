"""Tracking quality on the shared clips: coverage, jitter (raw / offline / live) and live lag (DESIGN.md 3.3).

Run: .venv/bin/python benchmarks/tracking_quality.py [--every K] [CLIP ...]
Coverage = share of the faces that dlib finds with upsampling on the full frame (every K-th frame) that a
track covers (IoU >= 0.3). Jitter and lag are pooled over tracks, weighted by track length.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stream.faces import FaceDetector, to_gray
from stream.media import MediaSource
from stream.pipeline import RenderOptions, run_tracking
from stream.smoothing import jitter, lag, pooled, smooth_live, smooth_offline

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media" / "videos"
CLIPS = ["liveportrait_s18.mp4", "liveportrait_d20.mp4", "liveportrait_d0.mp4",
         "face_recognition_short_hamilton_clip.mp4"]


def measure(path: Path, every: int, options: RenderOptions) -> dict[str, object]:
    tracks = run_tracking(path, options)
    by_frame = tracks.by_frame()
    reference = FaceDetector(detect_width=0, upsample=1)
    found = covered = 0
    with MediaSource(path, keep_audio=False) as source:
        for frame in source.frames():
            if frame.index % every:
                continue
            for box in reference.detect(to_gray(frame.image)):
                found += 1
                covered += any(f.box.iou(box) >= 0.3 for f in by_frame.get(frame.index, []))
    long_tracks = [t for t in tracks.tracks if len(t.faces) >= 3]
    raws = [t.raw_params() for t in long_tracks]
    weights = [len(r) for r in raws]
    return {
        "clip": path.name,
        "frames": tracks.frame_count,
        "cuts": tracks.cuts,
        "tracks": len(tracks.tracks),
        "tracked_faces": sum(len(t.faces) for t in tracks.tracks),
        "coverage": round(covered / found, 4) if found else None,
        "reference_faces": found,
        "jitter_raw": round(pooled([jitter(r) for r in raws], weights), 5),
        "jitter_offline": round(pooled([jitter(smooth_offline(r)) for r in raws], weights), 5),
        "jitter_live": round(pooled([jitter(smooth_live(r)) for r in raws], weights), 5),
        "lag_live": round(pooled([lag(smooth_live(r), smooth_offline(r)) for r in raws], weights), 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("clips", nargs="*", default=CLIPS)
    parser.add_argument("--every", type=int, default=3, help="reference detection on every K-th frame")
    parser.add_argument("--detect-interval", type=int, default=10)
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    rows = [measure(MEDIA / c if not Path(c).exists() else Path(c), args.every,
                    RenderOptions(detect_interval=args.detect_interval)) for c in args.clips]
    for row in rows:
        print(json.dumps(row))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
