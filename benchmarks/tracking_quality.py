"""Tracking quality on the shared clips: recall, precision, ids, jitter (raw / offline / live) and live lag
(DESIGN.md 3.3), for either detector.

Run: .venv/bin/python benchmarks/tracking_quality.py [--detector mediapipe|hog] [--every K] [--no-cnn] [CLIP ...]

The reference must find what the trackers find, or it cannot judge them: it is the union, on every K-th frame,
of dlib's HOG detector upsampled on the full frame and dlib's CNN face detector (`mmod_human_face_detector.dat`,
from face-recognition-models; about 1.5-8 s a frame here, so it is sampled sparsely) - neither is the detector
under test when that is `mediapipe`. Recall = reference faces a track covers (IoU >= 0.3 between the reference
box and the track's landmark box widened to a detector's box); precision = tracked faces that a reference face
covers. A tracked face the reference misses is not always wrong (the reference misses strong turns too): the
rows print the frames of such faces, to look at. Jitter and lag are pooled over tracks, weighted by length.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import dlib

from stream.media.sources import MediaSource
from stream.perception.geometry import Box, to_gray
from stream.perception.hog import FaceDetector
from stream.perception.smoothing import jitter, lag, pooled, smooth_live, smooth_offline
from stream.perception.stills import DEFAULT_DETECTOR, DETECTORS
from stream.render.options import RenderOptions
from stream.render.pipeline import run_tracking

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media" / "videos"
CLIPS = ["liveportrait_s18.mp4", "liveportrait_d20.mp4", "liveportrait_d0.mp4",
         "face_recognition_short_hamilton_clip.mp4"]


def _cnn() -> dlib.cnn_face_detection_model_v1:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("face-recognition-models is not installed (it carries the CNN detector)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return dlib.cnn_face_detection_model_v1(str(folder / "mmod_human_face_detector.dat"))


def _widen(box: Box) -> Box:
    """A landmark box (brows to chin) grown to the extent a face detector reports (forehead included)."""
    pad_x, pad_top = 0.1 * box.width, 0.25 * box.height
    return Box(box.x0 - pad_x, box.y0 - pad_top, box.x1 + pad_x, box.y1)


def measure(path: Path, every: int, options: RenderOptions, cnn: bool) -> dict[str, object]:
    tracks = run_tracking(path, options)
    by_frame = tracks.by_frame()
    hog, deep = FaceDetector(detect_width=0, upsample=1), _cnn() if cnn else None
    found = covered = tracked = confirmed = 0
    unconfirmed: list[int] = []
    with MediaSource(path, keep_audio=False) as source:
        for frame in source.frames():
            if frame.index % every:
                continue
            gray = to_gray(frame.image)
            reference = hog.detect(gray)
            if deep is not None:
                more = [Box(r.rect.left(), r.rect.top(), r.rect.right(), r.rect.bottom()) for r in deep(frame.image, 1)]
                reference += [b for b in more if all(b.iou(r) < 0.3 for r in reference)]
            faces = [_widen(f.box) for f in by_frame.get(frame.index, [])]
            found += len(reference)
            covered += sum(any(f.iou(r) >= 0.3 for f in faces) for r in reference)
            tracked += len(faces)
            hits = sum(any(f.iou(r) >= 0.3 for r in reference) for f in faces)
            confirmed += hits
            if hits < len(faces):
                unconfirmed.append(frame.index)
    long_tracks = [t for t in tracks.tracks if len(t.faces) >= 3]
    raws = [t.raw_params() for t in long_tracks]
    weights = [len(r) for r in raws]
    return {
        "clip": path.name,
        "detector": options.detector,
        "frames": tracks.frame_count,
        "cuts": tracks.cuts,
        "tracks": len(tracks.tracks),
        "tracked_faces": sum(len(t.faces) for t in tracks.tracks),
        "recall": round(covered / found, 4) if found else None,
        "reference_faces": found,
        "precision": round(confirmed / tracked, 4) if tracked else None,
        "sampled_tracked_faces": tracked,
        "frames_with_unconfirmed_faces": unconfirmed,
        "jitter_raw": round(pooled([jitter(r) for r in raws], weights), 5),
        "jitter_offline": round(pooled([jitter(smooth_offline(r)) for r in raws], weights), 5),
        "jitter_live": round(pooled([jitter(smooth_live(r)) for r in raws], weights), 5),
        "lag_live": round(pooled([lag(smooth_live(r), smooth_offline(r)) for r in raws], weights), 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="*", default=CLIPS)
    parser.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR)
    parser.add_argument("--every", type=int, default=6, help="reference detection on every K-th frame")
    parser.add_argument("--no-cnn", action="store_true", help="HOG alone as the reference (fast, misses much)")
    parser.add_argument("--detect-interval", type=int, default=10)
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    options = RenderOptions(detect_interval=args.detect_interval, detector=args.detector)
    rows = [measure(MEDIA / c if not Path(c).exists() else Path(c), args.every, options, not args.no_cnn)
            for c in args.clips]
    for row in rows:
        print(json.dumps(row))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
