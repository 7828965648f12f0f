"""STIT quads and the two smoothers: formula, jitter reduction, causality, lag."""

from __future__ import annotations

import numpy as np
import pytest

from stream.perception.smoothing import (
    LiveSmoother,
    jitter,
    lag,
    quad_corners,
    quad_params,
    smooth_live,
    smooth_offline,
)
from stream.render.options import RenderOptions
from stream.render.pipeline import run_tracking
from tests.conftest import media


def _face_landmarks(cx: float = 100.0, cy: float = 120.0, s: float = 1.0) -> np.ndarray:
    lm = np.zeros((68, 2))
    lm[36:42] = [cx - 20 * s, cy]  # left eye
    lm[42:48] = [cx + 20 * s, cy]  # right eye
    lm[48] = [cx - 15 * s, cy + 40 * s]
    lm[54] = [cx + 15 * s, cy + 40 * s]
    return lm


def test_quad_follows_stit_formula() -> None:
    lm = _face_landmarks()
    p = quad_params(lm)
    # eye_to_eye = (40, 0), eye_to_mouth = (0, 40): x = (40,0) - (40,0)*[-1,1]... = (80, 0) normalised,
    # scaled by max(40*2, 40*1.8) = 80; c = eye_avg + 0.1 * eye_to_mouth
    np.testing.assert_allclose(p, [100, 124, 80, 0], atol=1e-9)
    corners = quad_corners(p)
    np.testing.assert_allclose(corners, [[20, 44], [20, 204], [180, 204], [180, 44]], atol=1e-9)


def test_offline_is_stit_gaussian() -> None:
    rng = np.random.default_rng(0)
    raw = np.cumsum(rng.normal(0, 1, (50, 4)), axis=0) + 100
    from scipy.ndimage import gaussian_filter1d

    out = smooth_offline(raw)
    np.testing.assert_allclose(out[:, :2], gaussian_filter1d(raw[:, :2], 1.0, axis=0))
    np.testing.assert_allclose(out[:, 2:], gaussian_filter1d(raw[:, 2:], 3.0, axis=0))


def test_live_smoother_looks_at_most_four_frames_ahead() -> None:
    rng = np.random.default_rng(1)
    raw = rng.normal(100, 3, (40, 4))
    base = smooth_live(raw)
    for t in (5, 17, 30):
        changed = raw.copy()
        changed[t + 5:] += 50  # anything more than 4 frames later
        np.testing.assert_allclose(smooth_live(changed)[t], base[t], atol=1e-12)
        changed = raw.copy()
        changed[t + 4] += 50  # frame t+4 is inside the look-ahead and may matter
        assert not np.allclose(smooth_live(changed)[t], base[t])


def test_live_smoother_has_no_lag_on_steady_motion() -> None:
    t = np.arange(60, dtype=np.float64)
    raw = np.stack([100 + 3 * t, 50 + t, 40 + 0 * t, 0 * t], axis=1)
    np.testing.assert_allclose(smooth_live(raw), raw, atol=1e-6)


def test_live_smoother_rejects_long_lookahead() -> None:
    with pytest.raises(ValueError, match="look-ahead"):
        LiveSmoother(lookahead=5)


@pytest.fixture(scope="module")
def real_tracks() -> list[np.ndarray]:
    raws = []
    for clip in ("liveportrait_d20.mp4", "face_recognition_short_hamilton_clip.mp4"):
        tracks = run_tracking(media(f"videos/{clip}"), RenderOptions())
        raws += [t.raw_params() for t in tracks.tracks if len(t.faces) >= 20]
    assert len(raws) >= 3
    return raws


def test_jitter_reduced_on_real_tracks(real_tracks: list[np.ndarray]) -> None:
    for raw in real_tracks:
        j_raw, j_off, j_live = jitter(raw), jitter(smooth_offline(raw)), jitter(smooth_live(raw))
        assert j_off < 0.6 * j_raw, (j_raw, j_off)
        assert j_live < 0.75 * j_raw, (j_raw, j_live)


def test_live_lag_against_offline_is_small(real_tracks: list[np.ndarray]) -> None:
    for raw in real_tracks:
        # mean centre offset under 1% of the face size
        assert lag(smooth_live(raw), smooth_offline(raw)) < 0.01
