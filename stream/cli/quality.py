"""How a recast looks, measured: `recast bench --only quality` renders clips and scores each against its source.

The figures are those of the team's scorer (shared/tools/recast_score.py), computed the same way with dlib's
own models: its HOG detector, its 68-point landmarks and its face-recognition embedding (a ResNet whose
descriptors are 0.6 apart or more for different people). On every third frame where the source shows exactly
one face:

  found        a face is detected on the recast frame at the same place (IoU >= 0.4)
  cast_closer  the recast face's embedding is nearer the cast's than the actor's (the identity moved)
  d_cast       embedding distance recast -> cast (median)
  nme          the recast face's 68 landmarks against the actor's, over the eye distance (median)
  mouth        correlation over frames of the inner-lip opening, actor against recast
  seam         gradient in a 4 px band on the face outline, recast over source (1: no visible edge)
  sharp        mean |Laplacian| inside the face, recast over source (1: the actor's detail)
  flicker      mean change from the previous frame inside the face outline, recast over source (1: as steady)

and one figure of its own, which the team's scorer does not give:

  shimmer      the change left inside the face outline once each video's own motion from the previous frame is
               followed (dense optical flow), recast over source (1: no more noise than the source's). Flicker
               counts motion too: a face with more contrast than the actor's (darker eyes, brows, creases) changes
               more as it moves however steady it is drawn; shimmer is the part a viewer sees as noise.

The models come from the `face-recognition-models` package (located by path, as stream/faces does); the
68-point model's licence excludes commercial use, which is why it measures here and tracks only on request.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stream.media.sources import MediaSource
from stream.perception.hog import find_landmark_model

COLUMNS = ("found", "cast_closer", "d_cast", "nme", "mouth", "seam", "sharp", "flicker", "shimmer")
EMBEDDING_FILE = "dlib_face_recognition_resnet_model_v1.dat"


class Scorer:
    def __init__(self) -> None:
        import dlib

        self.hog = dlib.get_frontal_face_detector()
        self.shapes = dlib.shape_predictor(str(find_landmark_model()))
        self.embed = dlib.face_recognition_model_v1(str(_embedding_model()))

    def _descriptor(self, image: np.ndarray, shape: Any) -> np.ndarray:
        return np.array(self.embed.compute_face_descriptor(image, shape))

    def score(self, source: str | Path, recast: str | Path, cast: np.ndarray, every: int = 3) -> dict[str, Any]:
        """The scorer's figures for one recast of one clip against its cast portrait (RGB uint8)."""
        found = self.hog(cast, 1)
        if not found:
            raise ValueError("no face in the cast image")
        box = max(found, key=lambda r: r.width())
        e_cast = self._descriptor(cast, self.shapes(cast, box))
        rows: list[dict[str, Any]] = []
        prev: tuple[np.ndarray, np.ndarray] | None = None
        for i, (a, b) in enumerate(zip(_frames(source), _frames(recast), strict=False)):
            if a.shape != b.shape:
                b = cv2.resize(b, (a.shape[1], a.shape[0]))
            last, prev = prev, (a, b)
            if i % every:
                continue
            faces = self.hog(a, 1)
            if len(faces) != 1:
                continue
            rows.append(self._row(a, b, faces[0], e_cast, last))
        return summarise(rows)

    def _row(self, a: np.ndarray, b: np.ndarray, ra: Any, e_cast: np.ndarray,
             last: tuple[np.ndarray, np.ndarray] | None) -> dict[str, Any]:
        sa = self.shapes(a, ra)
        la = _points(sa)
        e_act = self._descriptor(a, sa)
        near = [r for r in self.hog(b, 1) if _iou(r, ra) >= 0.4]
        sb = self.shapes(b, near[0] if near else ra)
        lb = _points(sb)
        e_out = self._descriptor(b, sb)
        iod = float(np.linalg.norm(la[36:42].mean(0) - la[42:48].mean(0)))
        row: dict[str, Any] = {"found": bool(near), "d_cast": float(np.linalg.norm(e_out - e_cast)),
                               "d_actor": float(np.linalg.norm(e_out - e_act))}
        row["cast_closer"] = row["d_cast"] < row["d_actor"]
        row["nme"] = float(np.mean(np.linalg.norm(lb - la, axis=1)) / iod)
        row["mouth_a"] = float(np.linalg.norm(la[62] - la[66]) / iod)
        row["mouth_b"] = float(np.linalg.norm(lb[62] - lb[66]) / iod)
        hull = _hull(a.shape, la)
        band = cv2.dilate(hull, np.ones((5, 5), np.uint8)) - cv2.erode(hull, np.ones((5, 5), np.uint8))
        ga, gb = (np.abs(cv2.Sobel(_gray(x), cv2.CV_32F, 1, 1)) for x in (a, b))
        row["seam"] = float(gb[band > 0].mean() / max(ga[band > 0].mean(), 1e-6))
        core = cv2.erode(hull, np.ones((9, 9), np.uint8)) > 0
        lap_a, lap_b = (np.abs(cv2.Laplacian(_gray(x), cv2.CV_32F)) for x in (a, b))
        row["sharp"] = float(lap_b[core].mean() / max(lap_a[core].mean(), 1e-6))
        if last is not None:
            inside = hull > 0
            fa = np.abs(a.astype(np.float32) - last[0].astype(np.float32))[inside].mean()
            fb = np.abs(b.astype(np.float32) - last[1].astype(np.float32))[inside].mean()
            row["flicker"] = float(fb / max(fa, 0.5))
            row["shimmer"] = shimmer(a, last[0], b, last[1], hull)
        return row


def shimmer(a: np.ndarray, a_before: np.ndarray, b: np.ndarray, b_before: np.ndarray, inside: np.ndarray) -> float:
    """The change inside `inside` (uint8 mask) left once each video's motion from its previous frame is followed,
    `b`'s over `a`'s: each previous frame is pulled onto the current one along its own dense optical flow
    (Farneback's, on the grey picture around the face) before the two are compared."""
    ys, xs = np.nonzero(inside)
    if not ys.size:
        return 1.0
    pad = 16
    y0, y1 = max(int(ys.min()) - pad, 0), min(int(ys.max()) + pad + 1, inside.shape[0])
    x0, x1 = max(int(xs.min()) - pad, 0), min(int(xs.max()) + pad + 1, inside.shape[1])
    where = inside[y0:y1, x0:x1] > 0
    grid_x, grid_y = np.meshgrid(np.arange(x1 - x0, dtype=np.float32), np.arange(y1 - y0, dtype=np.float32))
    left = []
    for now, before in ((a, a_before), (b, b_before)):
        g_now, g_before = (cv2.cvtColor(x[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY) for x in (now, before))
        flow = cv2.calcOpticalFlowFarneback(  # type: ignore[call-overload]
            g_now, g_before, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        followed = cv2.remap(g_before.astype(np.float32), grid_x + flow[..., 0], grid_y + flow[..., 1],
                             cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        left.append(float(np.abs(g_now.astype(np.float32) - followed)[where].mean()))
    return left[1] / max(left[0], 0.25)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {"frames": 0}
    ma, mb = (np.array([r[k] for r in rows]) for k in ("mouth_a", "mouth_b"))
    mouth = float(np.corrcoef(ma, mb)[0, 1]) if ma.std() > 1e-6 and mb.std() > 1e-6 else 0.0
    flicker = [r["flicker"] for r in rows if "flicker" in r]
    shimmer = [r["shimmer"] for r in rows if "shimmer" in r]

    def median(key: str) -> float:
        return round(float(np.median([r[key] for r in rows])), 3)

    return {"frames": len(rows), "found": round(float(np.mean([r["found"] for r in rows])), 3),
            "cast_closer": round(float(np.mean([r["cast_closer"] for r in rows])), 3),
            "d_cast": median("d_cast"), "d_actor": median("d_actor"), "nme": median("nme"), "mouth": round(mouth, 3),
            "seam": median("seam"), "sharp": median("sharp"),
            "flicker": round(float(np.median(flicker)), 3) if flicker else None,
            "shimmer": round(float(np.median(shimmer)), 3) if shimmer else None}


# the look's goals for steadiness and crispness (docs/look.md): flicker at most FLICKER_MOST, or FLICKER_OVER_FLOOR
# above the clip passed through unchanged where the encoder alone adds more; sharpness within SHARP_WITHIN
FLICKER_MOST, FLICKER_OVER_FLOOR, SHARP_WITHIN = 1.05, 0.02, (0.9, 1.1)


def goal_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    """Each recast clip's flicker and sharpness against the goals, with its floor's where `--floor` scored one."""
    lines = []
    for clip, figures in results.items():
        flicker, sharp = figures.get("flicker"), figures.get("sharp")
        if clip.endswith(UNCHANGED) or flicker is None or sharp is None:
            continue
        floor = results.get(clip + UNCHANGED, {})
        most = FLICKER_MOST if floor.get("flicker") is None else max(FLICKER_MOST,
                                                                      floor["flicker"] + FLICKER_OVER_FLOOR)
        low, high = SHARP_WITHIN
        sharp_verdict = "met" if low <= sharp <= high else ("under" if sharp < low else "over")
        unchanged = f"; unchanged {floor['sharp']:.2f}" if floor.get("sharp") is not None else ""
        noise = f", shimmer {figures['shimmer']:.2f}" if figures.get("shimmer") is not None else ""
        lines.append(f"  {clip}: flicker {flicker:.2f} (<= {most:.2f}: {'met' if flicker <= most else 'over'}{noise}), "
                     f"sharp {sharp:.2f} ({low}-{high}: {sharp_verdict}{unchanged})")
    return ["goals (docs/look.md):", *lines] if lines else []


def format_quality(results: dict[str, dict[str, Any]]) -> str:
    """The scorer's table, one row per clip, and each recast's flicker and sharpness against the goals."""
    lines = ["quality (dlib's detector, 68 points and face embedding; see stream/cli/quality.py)",
             "| clip | frames | " + " | ".join(COLUMNS) + " |", "|" + " --- |" * (len(COLUMNS) + 2)]
    for clip, figures in results.items():
        cells = [f"{figures.get(c):.3f}" if isinstance(figures.get(c), float) else str(figures.get(c))
                 for c in COLUMNS]
        lines.append(f"| {clip} | {figures.get('frames')} | " + " | ".join(cells) + " |")
    return "\n".join(lines + goal_lines(results))


def _embedding_model() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(root) / "models" / EMBEDDING_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(f"{EMBEDDING_FILE} not found: install face-recognition-models")


def _frames(path: str | Path) -> Iterator[np.ndarray]:
    with MediaSource(path, keep_audio=False) as source:
        for frame in source.frames():
            yield frame.image


def _points(shape: Any) -> np.ndarray:
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def _iou(a: Any, b: Any) -> float:
    x0, y0 = max(a.left(), b.left()), max(a.top(), b.top())
    x1, y1 = min(a.right(), b.right()), min(a.bottom(), b.bottom())
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = a.width() * a.height() + b.width() * b.height() - inter
    return inter / union if union else 0.0


def _hull(shape: tuple[int, ...], landmarks: np.ndarray) -> np.ndarray:
    outline = np.concatenate([landmarks[0:17], landmarks[26:16:-1]]).astype(np.int32)
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(outline), 1)
    return mask


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)


UNCHANGED = " (unchanged)"  # the floor's rows: the clip's name and this


def run_quality(clips: list[str | Path], recaster: Any, cast: np.ndarray, options: Any,
                folder: Path, floor: bool = False, every: int = 3) -> dict[str, dict[str, Any]]:
    """Render each clip offline into `folder` with a fresh copy of `recaster`, and score it against `cast`. With
    `floor`, each clip is also passed through unchanged (the identity recaster: decoded, tracked, cropped, pasted
    back and encoded) and scored: what the pipeline alone costs, below which no recast's nme or flicker can go.
    `every`: the scorer's stride (every third frame, as the team's scorer; more is quicker and noisier)."""
    import dataclasses

    from stream.recasters.contract import IdentityRecaster
    from stream.render.pipeline import render

    scorer = Scorer()
    offline = dataclasses.replace(options, mode="offline")
    results: dict[str, dict[str, Any]] = {}
    for clip in clips:
        name = Path(clip).stem
        runs = [(name, recaster.session_copy(), "recast")]
        if floor:
            runs.append((name + UNCHANGED, IdentityRecaster(), "unchanged"))
        for row, one, suffix in runs:
            out = folder / f"{name}.{suffix}.mp4"
            report = render(clip, out, one, offline)
            results[row] = {**scorer.score(clip, out, cast, every), "render_fps": report.as_dict()["fps"]}
    return results
