"""The real STIT and e4e direction files, both application conventions, and learning a new direction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engines.directions import (
    DirectionError,
    apply_direction,
    apply_interfacegan,
    apply_stit,
    learn_direction,
    list_directions,
    load_direction,
    save_direction,
)
from tests.engine_helpers import DIRECTIONS

STIT = DIRECTIONS / "stit_w_directions"
E4E = DIRECTIONS / "e4e_interfacegan"
# From directions/README.md: L2 norm of row 0.
README_NORMS = {"age": 0.7308, "gender": 0.9716, "smile": 1.0073, "yaw": 0.9364, "eye_distance": 0.2154}


def test_stit_files() -> None:
    found = list_directions(STIT)
    assert len(found) == 16
    for d in found:
        assert d.convention == "stit" and d.vector.dtype == np.float64 and d.vector.shape == (18, 512)
        assert np.all(d.vector == d.vector[0])  # one W direction repeated for the 18 layers
        assert not d.per_layer
        if d.name in README_NORMS:
            assert d.norm == pytest.approx(README_NORMS[d.name], abs=1e-4)


def test_e4e_files() -> None:
    found = {d.name: d for d in list_directions(E4E)}
    assert set(found) == {"age", "pose", "smile"}
    assert found["age"].vector.shape == (1, 512) and found["age"].vector.dtype == np.float32
    assert found["pose"].vector.shape == (1, 18, 512)
    for d in found.values():
        assert d.convention == "interfacegan"
        assert d.norm == pytest.approx(1.0, abs=1e-5)


def test_stit_convention_halves_the_factor_in_float64() -> None:
    age = load_direction(STIT / "age.npy")
    pivots = torch.randn(3, 18, 512)
    out = apply_stit(pivots, age, -8.0)
    want = (pivots.numpy().astype(np.float64) + (-8.0 / 2) * age.vector[0][None]).astype(np.float32)
    assert out.dtype == torch.float32 and out.shape == (3, 18, 512)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-7, atol=1e-7)  # float64 sums; FMA may round otherwise
    delta = (out - pivots).numpy()
    assert np.allclose(delta, -4.0 * age.vector[0].astype(np.float32), atol=1e-5)  # same shift on every layer


def test_interfacegan_convention_no_halving_and_per_layer() -> None:
    smile = load_direction(E4E / "smile.pt")
    latents = torch.randn(2, 18, 512)
    out = apply_interfacegan(latents, smile, 3.0)
    assert torch.allclose(out - latents, torch.from_numpy(3.0 * smile.vector).expand(2, 18, 512), atol=1e-6)
    pose = load_direction(E4E / "pose.pt")
    layered = np.array(pose.vector)
    layered[0, 5] *= 2  # make one layer differ to see it is added per layer
    custom = type(pose)("pose2", layered, pose.path, "interfacegan")
    assert custom.per_layer
    diff = (apply_direction(latents, custom, 1.0) - latents).numpy()
    assert np.allclose(diff[:, 5], 2 * pose.vector[0, 0], atol=1e-6)
    assert np.allclose(diff[:, 4], pose.vector[0, 0], atol=1e-6)
    # the same file read with STIT's convention: halved
    assert torch.allclose(apply_direction(latents, smile, 3.0, "stit") - latents,
                          torch.from_numpy(1.5 * smile.vector[0]).expand(2, 18, 512), atol=1e-6)


def test_bad_direction_files(tmp_path: Path) -> None:
    np.save(tmp_path / "short.npy", np.zeros((18, 100)))
    with pytest.raises(DirectionError, match=r"short\.npy: expected float"):
        load_direction(tmp_path / "short.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DirectionError, match=r"obj\.npy: not a plain \.npy array"):
        load_direction(tmp_path / "obj.npy")
    np.save(tmp_path / "nan.npy", np.full((1, 512), np.nan))
    with pytest.raises(DirectionError, match="NaN"):
        load_direction(tmp_path / "nan.npy")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(DirectionError, match=r"text\.pt: not a readable torch file"):
        load_direction(tmp_path / "text.pt")
    torch.save({"not": "a tensor"}, tmp_path / "dict.pt")
    with pytest.raises(DirectionError, match="not a tensor"):
        load_direction(tmp_path / "dict.pt")


def _w_like(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """W+-like latents: one 512-vector per sample repeated over 18 layers, plus a little per-layer noise."""
    w = rng.standard_normal((n, 512))
    return w, np.repeat(w[:, None], 18, axis=1) + 0.05 * rng.standard_normal((n, 18, 512))


def test_learn_recovers_a_planted_direction() -> None:
    rng = np.random.default_rng(0)
    true = rng.standard_normal(512)
    true /= np.linalg.norm(true)
    w, latents = _w_like(rng, 600)
    score = w @ true + 0.2 * rng.standard_normal(600)
    threshold = np.quantile(score, 0.8)  # imbalanced classes: the top 20% are "positive"
    learned = learn_direction(latents[score > threshold], latents[score <= threshold])
    assert learned.normal.shape == (18, 512)
    assert np.linalg.norm(learned.normal) == pytest.approx(1.0)
    assert (learned.positives, learned.negatives) == (120, 480)
    # cosine with the planted direction (repeated per layer); chance level is about 0.04
    cosine = float(np.sum(learned.normal * np.repeat(true[None], 18, 0) / np.sqrt(18)))
    assert cosine > 0.5
    # held-out: new latents are classified by the learned hyperplane well above chance (0.5); measured 0.68
    w2, held = _w_like(rng, 400)
    labels = w2 @ true + 0.2 * rng.standard_normal(400) > threshold
    pred = np.tensordot(held, learned.normal, axes=([1, 2], [0, 1])) + learned.bias > 0
    balanced = (np.mean(pred[labels]) + np.mean(~pred[~labels])) / 2
    assert balanced > 0.62
    with pytest.raises(ValueError, match="at least two examples"):
        learn_direction(latents[:1], latents[1:5])


def test_save_direction_uses_the_stit_layout(tmp_path: Path) -> None:
    normal = np.random.default_rng(1).standard_normal((18, 512))
    path = save_direction(tmp_path / "mine.npy", normal)
    back = load_direction(path)
    assert back.vector.dtype == np.float64 and np.array_equal(back.vector, normal)


def test_one_rule_for_an_edits_factor() -> None:
    """engines.edits.edit_factor: the bake's and render's --edit and the viewer's edit message all check here."""
    from engines.edits import EditError, edit_factor

    assert edit_factor("2") == 2.0 and edit_factor(-20) == -20.0 and edit_factor(0.5) == 0.5
    for bad in ("x", "nan", "inf", float("nan"), 20.5, -1e9, True, None, [1]):
        with pytest.raises(EditError):
            edit_factor(bad)
