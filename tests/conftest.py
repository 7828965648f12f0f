"""Shared fixtures: the real media in ../shared/media, small videos made on the fly, and what several test files
need built once (the hamilton clip's tracks, the s42 cast and its warp recaster)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from stream.casts.cast import Cast, cast_from_file
from stream.perception.track_set import TrackSet
from stream.recasters.warp import WarpRecaster
from stream.render.options import RenderOptions
from stream.render.pipeline import run_tracking

SHARED = Path(os.environ.get("RECAST_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
MEDIA = SHARED / "media"
REFERENCE = SHARED / "reference"


HAMILTON = "videos/face_recognition_short_hamilton_clip.mp4"  # a wide shot, a turning close-up, an audience
S42 = "images/liveportrait_s42.jpg"  # the portrait the look's goals are measured with


def media(name: str) -> Path:
    path = MEDIA / name
    if not path.is_file():
        pytest.fail(f"{path}: test media missing (../shared must sit beside the project)")
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECAST_CACHE", str(tmp_path_factory.getbasetemp() / "recast-cache"))
    # the cast registry `recast serve` and `render --cast ID` read by default: never the user's own
    monkeypatch.setenv("RECAST_CASTS", str(tmp_path_factory.getbasetemp() / "recast-casts"))


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB over the pixels where ``mask`` is True (all when None)."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    if mask is not None:
        diff = diff[mask]
    mse = float(np.mean(diff**2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def x264_settings(path: Path) -> str:
    """The settings x264 writes into its stream (an SEI message at the start of the file)."""
    found = re.search(rb"x264 - core [^\x00]*", path.read_bytes())
    assert found is not None, f"{path}: no x264 settings"
    return found.group().decode("ascii", "replace")


def decode_all(path: Path | str) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def write_video(path: Path, frames: Sequence[np.ndarray], pts: Sequence[int] | None = None,
                time_base: Fraction = Fraction(1, 25), rate: int = 25, audio_seconds: float = 0.0,
                rotation: int = 0) -> Path:
    """A small H.264 mp4 (yuv444p so odd sizes work), with explicit timestamps, optional audio and an optional
    display rotation (the frames are stored as given; players turn them by ``rotation`` degrees)."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=rate)
        s.width, s.height = w, h
        s.pix_fmt = "yuv420p" if (w % 2 == 0 and h % 2 == 0) else "yuv444p"
        s.codec_context.time_base = time_base
        s.time_base = time_base
        if rotation:
            s.set_display_rotation(rotation)
        for i, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = pts[i] if pts is not None else i
            vf.time_base = time_base
            c.mux(s.encode(vf))
        c.mux(s.encode(None))
        if audio_seconds:
            a = c.add_stream("aac", rate=44100, layout="mono")
            n = int(audio_seconds * 44100)
            samples = (0.2 * np.sin(np.arange(n) * 2 * np.pi * 440 / 44100)).astype(np.float32)
            for start in range(0, n, 1024):
                af = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = 44100, start, Fraction(1, 44100)
                c.mux(a.encode(af))
            c.mux(a.encode(None))
    return path


def still_video(image: np.ndarray, frames: int, jitter_px: float = 2.0, seed: int = 0) -> list[np.ndarray]:
    """A still photo as a short clip with a little hand-held camera shake."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    out = []
    for _ in range(frames):
        dx, dy = rng.normal(0, jitter_px, 2)
        m = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float64)
        out.append(cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE))
    return out


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    def _make(name: str, frames: Sequence[np.ndarray], **kwargs: object) -> Path:
        return write_video(tmp_path / name, frames, **kwargs)  # type: ignore[arg-type]

    return _make


@pytest.fixture(scope="module")
def demo() -> Any:
    """The demo title's frames and face boxes, with a title table for the server (tests/demo_title.py)."""
    from tests.demo_title import DemoTitle

    return DemoTitle.load()


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small models for the bake tests, saved as files: the 64 px StyleGAN2 and the untrained e4e of
    `export.small`, and the FOMM of the fomm_small reference vectors."""
    import torch

    from engines.checkpoints import build_modules, save_safetensors
    from engines.official import Checkpoint
    from export.small import small_models

    folder = tmp_path_factory.mktemp("models")
    generator, encoder = small_models()
    save_safetensors(generator, folder / "g.safetensors")
    save_safetensors(encoder, folder / "e.safetensors")
    fcfg = json.loads((REFERENCE / "vectors" / "fomm_small" / "config.json").read_text())
    modules = build_modules("fomm", fcfg)
    for name in ("kp_detector", "generator"):
        with np.load(REFERENCE / "vectors" / "fomm_small" / f"{name}_weights.npz") as arrays:
            modules[name].load_state_dict({k: torch.from_numpy(arrays[k]) for k in arrays.files}, strict=True)
    save_safetensors(Checkpoint("fomm", folder / "f", "2" * 64, fcfg, modules), folder / "fomm.safetensors")
    return {"generator": folder / "g.safetensors", "encoder": folder / "e.safetensors",
            "fomm": folder / "fomm.safetensors"}


def capture_rendered() -> tuple[dict[int, np.ndarray], Callable[[Any, np.ndarray, Any], None]]:
    """Per frame, the weight of everything the renderer wrote (face masks and the badge): a dict and the
    ``on_rendered`` hook of ``stream.render.pipeline.render`` that fills it."""
    touched: dict[int, np.ndarray] = {}

    def on_rendered(frame: Any, image: np.ndarray, rendered: Any) -> None:
        weight = np.zeros(image.shape[:2], np.float32)
        for region in rendered.regions:
            region.add_to(weight)
        if rendered.badge is not None:
            b = rendered.badge
            weight[b.y0:b.y1, b.x0:b.x1] = 1.0
        touched[frame.index] = weight

    return touched, on_rendered


@pytest.fixture(scope="session")
def hamilton_tracks() -> TrackSet:
    """The hamilton clip tracked once for the whole run, with the default options (the mesh tracker)."""
    return run_tracking(media(HAMILTON), RenderOptions())


@functools.cache
def s42_cast() -> Cast:
    return cast_from_file(media(S42))


def s42_warp(**options: Any) -> WarpRecaster:
    """A fresh warp recaster of the s42 cast (its own track state; the cast is read once)."""
    return WarpRecaster([s42_cast()], **options)


def decoded_h264(path: Path) -> list[np.ndarray]:
    """Every picture of an H.264 elementary stream (Annex-B), in order, as RGB."""
    from export.renditions import decoded_pictures

    return [f.to_ndarray(format="rgb24") for f in decoded_pictures(path)]


@contextlib.contextmanager
def static_server(folder: Path, handler: type[http.server.SimpleHTTPRequestHandler]) -> Iterator[str]:
    """`folder` served over HTTP on a free loopback port by `handler`, in a thread: its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()
