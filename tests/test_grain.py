"""How grainy a source is, and the offline encoder's tuning it decides (stream/media/grain.py): x264's `grain`
tuning for a grainy source, its default for a clean one, written into the file's own x264 settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stream.media.grain import GRAINY, noise_level, offline_tuning, source_noise
from stream.media.sinks import MediaSink
from stream.media.sources import MediaSource
from tests.conftest import media, x264_settings


def test_the_noise_estimate_reads_noise_and_not_shading() -> None:
    rng = np.random.default_rng(7)
    flat = np.full((240, 320), 128.0)
    assert abs(noise_level(flat + rng.normal(0, 3, flat.shape)) - 3) < 0.45  # within 15 %
    y, x = np.mgrid[0:240, 0:320]
    shaded = 60 + 0.4 * x + 0.2 * y + 30 * ((x - 160) ** 2 + (y - 120) ** 2 < 60 ** 2)  # shading and a disc's edge
    assert noise_level(shaded) < 0.3
    assert noise_level(np.zeros((2, 2))) == 0.0


def test_a_crisp_close_up_counts_as_grainy_and_the_other_clips_do_not() -> None:
    """Margins: d0 reads 1.15 and the others 0.36-0.45 against GRAINY 0.7 (decoding is exact, so the figures hold
    on any CPU; the asserts leave a quarter either way)."""
    assert source_noise(media("videos/liveportrait_d0.mp4")) > 1.3 * GRAINY
    for clip in ("liveportrait_d20", "liveportrait_s18", "face_recognition_short_hamilton_clip"):
        level = source_noise(media(f"videos/{clip}.mp4"))
        assert level is not None and level < 0.75 * GRAINY, (clip, level)
    assert offline_tuning(media("videos/liveportrait_d0.mp4")) == "grain"
    assert offline_tuning(media("videos/liveportrait_s18.mp4")) is None


def test_an_unreadable_source_is_not_measured(tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    assert source_noise(broken) is None and offline_tuning(broken) is None
    assert source_noise(tmp_path / "missing.mp4") is None


def test_the_tuning_reaches_the_encoder(tmp_path: Path) -> None:
    with MediaSource(media("videos/liveportrait_d20.mp4"), keep_audio=False) as source:
        frames = [frame for _, frame in zip(range(3), source.frames(), strict=False)]
        for tune in ("grain", None):
            out = tmp_path / f"{tune}.mp4"
            with MediaSink(out, source.info, tune=tune) as sink:
                for frame in frames:
                    sink.write(frame)
            # x264's grain tuning narrows its dead zones to 6 (its default: 21 and 11)
            assert ("deadzone=6,6" in x264_settings(out)) == (tune == "grain")
