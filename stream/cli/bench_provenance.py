"""`recast bench --only provenance`: whether the invisible mark survives what happens to a stream, what it costs, and
whether unrecast video is ever taken for marked.

Each clip is recast (the live path, warp, the default casts: what a viewer of an unbaked title gets) and its frames
kept; then each attack is applied with PyAV, in memory, and the mark read back frame by frame
(stream.media.watermark.read_frames, each frame judged by the window of frames around it):
- h264 / vp8: scaled to 640x360 (a square clip to 480x480) and encoded at 500 kbit/s, as WebRTC does on a poor
  link (x264 superfast zero-latency; libvpx as aiortc sets it: real time, constant rate, its strongest temporal
  denoiser, which takes small changes from frame to frame for noise);
- half: scaled to half size (area filter) and encoded at high quality;
- crop: half the width and 70 % of the height, around the face (what keeps the face and loses the badge), at the
  original scale;
- capture: scaled to 80 % (a window on another screen), encoded at 1.5 Mbit/s once.
For each: the share of recast frames read as marked (goal >= 99 %) and whether the payload came back. Then the cost:
the mark's own PSNR (the recast with and without it) over the frame and over the face's box (the face itself is
spared: stream/media/watermark.spare_faces), the face's PSNR against the source with and without it (goal: at
most 0.5 dB less), and the time to mark a 1280x720 frame (goal <= 2 ms). Last, false
positives: every clip given with `--unmarked` (by default every video beside the input) read whole, unrecast.
"""

from __future__ import annotations

import dataclasses
import fractions
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from stream.media.sources import MediaSource
from stream.media.watermark import (
    Z_MARKED,
    Face,
    FaceOutlines,
    Payload,
    Watermark,
    read_frames,
    read_video,
    strength_map,
)
from stream.perception.stills import installed_face_outlines
from stream.recasters.contract import Recaster
from stream.render.options import RenderOptions
from stream.render.pipeline import render
from stream.render.renderer import mark_payload

WEBRTC_KBPS = 500
CAPTURE_KBPS = 1500
MAX_FRAMES = 192  # two full payload cycles


def encoded(images: Sequence[np.ndarray], codec: str, kbps: int | None, size: tuple[int, int],
            fps: int = 25) -> list[np.ndarray]:
    """The pictures scaled to `size`, encoded with `codec` (libx264 or libvpx) at `kbps` (None: high quality) and
    decoded back."""
    width, height = size
    encoder = av.CodecContext.create(codec, "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base = fractions.Fraction(1, fps)
    if kbps is not None:
        encoder.bit_rate = kbps * 1000
    if codec == "libx264":
        encoder.options = {"preset": "superfast", "tune": "zerolatency", **({} if kbps else {"crf": "18"})}
    else:  # as aiortc sends VP8: real time, constant rate, the strongest temporal denoiser, static blocks skipped
        rate = str((kbps or WEBRTC_KBPS) * 1000)
        encoder.gop_size, encoder.qmin, encoder.qmax = 3000, 2, 56
        encoder.options = {"bufsize": rate, "cpu-used": "-6", "deadline": "realtime", "lag-in-frames": "0",
                           "minrate": rate, "maxrate": rate, "noise-sensitivity": "4", "overshoot-pct": "15",
                           "static-thresh": "1", "undershoot-pct": "100"}
    decoder = av.CodecContext.create("h264" if codec == "libx264" else "vp8", "r")
    out: list[np.ndarray] = []
    for index, image in enumerate(images):
        scaled = image if image.shape[:2] == (height, width) else cv2.resize(image, size,
                                                                             interpolation=cv2.INTER_AREA)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(scaled), format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        for packet in encoder.encode(frame):
            out += [f.to_ndarray(format="rgb24") for f in decoder.decode(packet)]
    for packet in encoder.encode(None):
        out += [f.to_ndarray(format="rgb24") for f in decoder.decode(packet)]
    return out


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def webrtc_size(width: int, height: int) -> tuple[int, int]:
    return (640, 360) if width > height else (480, 480) if width == height else (360, 640)


def crop_box(width: int, height: int, centre: tuple[float, float]) -> tuple[int, int, int, int]:
    """Half the width and 70 % of the height around `centre` (the face), inside the frame: x0, y0, x1, y1."""
    cw, ch = width // 2, int(height * 0.7)
    x0 = int(np.clip(centre[0] - cw / 2, 0, width - cw))
    y0 = int(np.clip(centre[1] - ch / 2, 0, height - ch))
    return x0, y0, x0 + cw, y0 + ch


def attacks(width: int, height: int, face_centre: tuple[float, float]
            ) -> dict[str, Callable[[Sequence[np.ndarray]], list[np.ndarray]]]:
    """Each attack, by name: pictures in, what a reader gets out."""
    small = webrtc_size(width, height)
    x0, y0, x1, y1 = crop_box(width, height, face_centre)
    capture = (_even(width * 0.8), _even(height * 0.8))
    return {
        "h264 500k": lambda images: encoded(images, "libx264", WEBRTC_KBPS, small),
        "vp8 500k": lambda images: encoded(images, "libvpx", WEBRTC_KBPS, small),
        "half size": lambda images: encoded(images, "libx264", None, (_even(width / 2), _even(height / 2))),
        "crop": lambda images: [image[y0:y1, x0:x1] for image in images],
        "capture": lambda images: encoded(images, "libx264", CAPTURE_KBPS, capture),
    }


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255 ** 2 / mse) if mse > 0 else 99.0


def _recast(location: str, recaster: Recaster, options: RenderOptions, frames: int, tmp: Path
            ) -> tuple[list[np.ndarray], list[np.ndarray], list[tuple[int, int, int, int] | None], list[list[Face]]]:
    """The clip's first `frames` frames recast on the live path: the recast pictures (marked), the source's, each
    frame's face box (None where nothing was recast) and the regions its mark spared (the faces)."""
    marked: list[np.ndarray] = []
    boxes: list[tuple[int, int, int, int] | None] = []
    spared: list[list[Face]] = []

    def kept(frame: Any, image: np.ndarray, rendered: Any) -> None:
        if len(marked) >= frames:
            return
        marked.append(image.copy())
        spared.append([(r.x0, r.y0, r.alpha) for r in rendered.regions])
        if not rendered.regions:
            boxes.append(None)
            return
        x0 = min(r.x0 for r in rendered.regions)
        y0 = min(r.y0 for r in rendered.regions)
        x1 = max(r.x0 + r.alpha.shape[1] for r in rendered.regions)
        y1 = max(r.y0 + r.alpha.shape[0] for r in rendered.regions)
        boxes.append((x0, y0, x1, y1))

    render(location, tmp / "recast.mp4", recaster, options, on_rendered=kept)
    with MediaSource(location, keep_audio=False) as media:
        source = [f.image for f in media.frames() if f.index < len(marked)]
    return marked, source, boxes, spared


def _embed_ms() -> float:
    """The time to mark a 1280x720 frame with one face of 320x380 spared, as the renderer does (the median of 300,
    after a first that builds the tiles)."""
    image = np.full((720, 1280, 3), 128, np.uint8)
    alpha = np.zeros((380, 320), np.float32)
    alpha[40:340, 30:290] = 1.0
    mark = Watermark(Payload(True, 1))
    mark.embed(image, 0)
    times = []
    for index in range(1, 301):
        start = time.perf_counter()
        mark.embed(image, index, [(480, 170, alpha)])
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def bench_clip(location: str, recaster: Recaster, options: RenderOptions, frames: int = MAX_FRAMES,
               faces: FaceOutlines | None = None) -> dict[str, Any]:
    """One clip recast, attacked and read back; `faces`: the face finder the reads leave the faces out with."""
    with tempfile.TemporaryDirectory(prefix="recast-provenance-") as tmp:
        live = dataclasses.replace(options, mode="live", mark_id="bench")
        marked, source, boxes, spared = _recast(location, recaster, live, frames, Path(tmp))
    payload = mark_payload(recaster, "bench")
    recast = [i for i, box in enumerate(boxes) if box is not None]
    height, width = marked[0].shape[:2]
    first = next(box for box in boxes if box is not None) if recast else (0, 0, width, height)
    centre = ((first[0] + first[2]) / 2, (first[1] + first[3]) / 2)
    # the mark's delta, as the renderer added it (the faces spared), taken back out of the recast (clipping aside)
    mark = Watermark(payload)
    costs: list[tuple[float, float, float, float]] = []
    for index in recast[::6]:
        x0, y0, x1, y1 = boxes[index]  # type: ignore[misc]
        grey = np.full(marked[index].shape, 128, np.uint8)
        # as strong as the recast picture let it be (the mark itself changes that little)
        mark.embed(grey, index, spared[index], strength_map(marked[index], spared[index]))
        bare = np.clip(marked[index].astype(np.int16) - (grey.astype(np.int16) - 128), 0, 255).astype(np.uint8)
        face = (slice(y0, y1), slice(x0, x1))
        costs.append((_psnr(bare, marked[index]), _psnr(bare[face], marked[index][face]),
                      _psnr(source[index][face], bare[face]), _psnr(source[index][face], marked[index][face])))
    rows = []
    for name, attack in {"none": lambda images: list(images), **attacks(width, height, centre)}.items():
        start = time.perf_counter()
        attacked = attack(marked)
        verdicts, read = read_frames(attacked, faces)
        seconds = time.perf_counter() - start
        by_index = {v.index: v for v in verdicts}
        hits = sum(1 for i in recast if i in by_index and by_index[i].marked)
        rows.append({"attack": name, "size": f"{attacked[0].shape[1]}x{attacked[0].shape[0]}",
                     "recast_frames": len(recast), "marked": hits,
                     "share": round(hits / len(recast), 4) if recast else 0.0,
                     "z_min": round(min((by_index[i].z for i in recast if i in by_index), default=0.0), 1),
                     "payload_ok": read == payload, "seconds": round(seconds, 1)})
    return {"clip": Path(location).name, "size": f"{width}x{height}", "frames": len(marked), "attacks": rows,
            "mark_psnr_db": round(statistics.median(c[0] for c in costs), 1) if costs else None,
            "mark_psnr_face_db": round(statistics.median(c[1] for c in costs), 1) if costs else None,
            "face_psnr_db": round(statistics.median(c[2] for c in costs), 2) if costs else None,
            "face_psnr_marked_db": round(statistics.median(c[3] for c in costs), 2) if costs else None}


def false_positives(clips: Sequence[str], faces: FaceOutlines | None = None) -> list[dict[str, Any]]:
    """Every clip read whole, unrecast: the frames taken for marked (goal 0) and the strongest window's score."""
    out = []
    for clip in clips:
        report = read_video(clip, faces=faces)
        out.append({"clip": Path(clip).name, "frames": report.frames, "marked": report.marked,
                    "z_max": round(report.z_max, 2)})
    return out


def run_provenance_bench(clips: Sequence[str], recaster: Recaster, options: RenderOptions,
                         unmarked: Sequence[str], frames: int = MAX_FRAMES) -> dict[str, Any]:
    faces = installed_face_outlines()  # read as `recast verify` reads: the faces, which the mark spares, left out
    return {"embed_ms_720p": round(_embed_ms(), 3),
            "clips": [bench_clip(clip, recaster, options, frames, faces) for clip in clips],
            "false_positives": false_positives(unmarked, faces)}


def format_provenance_bench(result: dict[str, Any]) -> str:
    lines = [f"the invisible mark: {result['embed_ms_720p']:.2f} ms to mark a 1280x720 frame with one face spared "
             "(goal <= 2 ms)"]
    for clip in result["clips"]:
        lines.append(f"{clip['clip']} ({clip['size']}, {clip['frames']} frames recast on the live path): the mark "
                     f"is {clip['mark_psnr_db']} dB PSNR over the frame, {clip['mark_psnr_face_db']} over the face's "
                     f"box (the face is spared); the face against the source {clip['face_psnr_db']} dB without it, "
                     f"{clip['face_psnr_marked_db']} dB with it")
        lines.append(f"  {'attack':<10} {'size':>9} {'marked':>9} {'share':>7} {'z min':>6} payload")
        for row in clip["attacks"]:
            lines.append(f"  {row['attack']:<10} {row['size']:>9} {row['marked']:>4}/{row['recast_frames']:<4} "
                         f"{row['share']:>7.1%} {row['z_min']:>6.1f} {'read' if row['payload_ok'] else 'NOT read'}")
    lines.append(f"unrecast clips (false positives; goal 0 frames marked; a window is marked from z {Z_MARKED:.0f}):")
    for row in result["false_positives"]:
        lines.append(f"  {row['clip']:<44} {row['marked']:>4} of {row['frames']:>4} frames marked, z max "
                     f"{row['z_max']:.1f}")
    return "\n".join(lines)
