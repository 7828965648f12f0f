"""The architectures against the reference vectors, through the same parity runner `recast parity` uses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engines import e4e, fomm, stylegan2
from engines.parity import ParityError, run_parity
from tests.engine_helpers import VECTORS, formula_e4e, write_vector_folder

# Tolerances are the ones the vector READMEs suggest (engines/parity.py TOLERANCES).
SHARED_FOLDERS = ["stylegan2_small", "fomm_small", "e4e_small"]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "e4e_small" else n
                                  for n in SHARED_FOLDERS])
def test_shared_vectors_pass(name: str) -> None:
    report = run_parity(VECTORS / name)
    expected = set(np.load(VECTORS / name / "expected.npz").files)
    assert {c.name for c in report.checks} == expected  # every array of the folder was checked
    failed = [(c.name, c.max_abs_err, str(c.tolerance)) for c in report.checks if not c.passed]
    assert not failed, report.format()
    assert report.ok


def test_stylegan2_matches_closely_where_upstream_is_deterministic() -> None:
    """Same op order as the reference ops: on the machine that made the vectors the error is 0.0, but other CPUs
    and thread counts sum in another order (an AMD EPYC gave 8.2e-6 on img_const). The bounds are a fifth of the
    parity tolerances (1e-5 for ws, 1e-4 for images): far tighter than parity, true on any x86-64."""
    report = run_parity(VECTORS / "stylegan2_small")
    errors = {c.name: c.max_abs_err for c in report.checks}
    assert errors["ws"] < 2e-6
    assert errors["img_const"] < 2e-5
    assert errors["img_const_unfused"] < 2e-5  # README: fused vs unfused differ by ~6.7e-6


def test_official_key_sets_and_counts() -> None:
    manifests = VECTORS.parent / "manifests"
    g = json.loads((manifests / "stylegan2_ada_ffhq1024_G_ema.json").read_text())
    config = {k: v for k, v in g["config"].items() if k != "derived"}
    G = stylegan2.Generator(**config)
    assert {k: list(v.shape) for k, v in G.state_dict().items()} == g["tensors"]
    assert G.num_ws == 18
    for name, cls_params in (("fomm_vox256_kp_detector", "kp"), ("fomm_vox256_generator", "gen")):
        m = json.loads((manifests / f"{name}.json").read_text())
        cfg = {k: v for k, v in m["config"].items() if k != "config_file"}
        module = fomm.KPDetector(**cfg) if cls_params == "kp" else fomm.OcclusionAwareGenerator(**cfg)
        assert {k: list(v.shape) for k, v in module.state_dict().items()} == m["tensors"]
    m = json.loads((manifests / "e4e_encoder_only.json").read_text())
    encoder = e4e.Encoder4Editing(50, "ir_se", 1024)
    assert {k: list(v.shape) for k, v in encoder.state_dict().items()} == m["tensors"]
    assert sum(p.numel() for p in encoder.parameters()) == m["num_parameters"]


def _stylegan_folder(tmp: Path) -> Path:
    """A folder of the shared form with other options: conv_clamp, a truncation cutoff, labels, 32 px."""
    init = {"z_dim": 16, "c_dim": 3, "w_dim": 24, "img_resolution": 32, "img_channels": 3,
            "mapping_kwargs": {"num_layers": 3}, "synthesis_kwargs": {"channel_base": 512, "channel_max": 32,
                                                                       "conv_clamp": 0.5}}
    torch.manual_seed(5)
    G = stylegan2.Generator(**init).eval()
    with torch.no_grad():
        G.mapping.w_avg.normal_()
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.2)
    z, c = torch.randn(3, 16), torch.randn(3, 3)
    with torch.no_grad():
        ws = G.mapping(z, c)
        ws_trunc = G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=4)
        expected = {"ws": ws, "img_const": G.synthesis(ws), "ws_trunc": ws_trunc,
                    "img_trunc": G.synthesis(ws_trunc), "b4_img": G.synthesis.b4(None, None, ws[:, :2])[1]}
    # independent facts about the options: cutoff leaves later layers alone, the clamp bounds the activations
    assert torch.equal(ws_trunc[:, 4:], ws[:, 4:]) and not torch.equal(ws_trunc[:, :4], ws[:, :4])
    with torch.no_grad():
        x, _ = G.synthesis.b4(None, None, ws[:, :2])
    assert float(x.abs().max()) <= 0.5 + 1e-6
    config = {"init_kwargs": init, "truncation": {"psi": 0.5, "cutoff": 4}}
    return write_vector_folder(tmp, config, {"z": z.numpy(), "c": c.numpy()},
                               {k: v.numpy() for k, v in expected.items()}, {"weights.npz": G.state_dict()})


def test_other_stylegan_options_pass(tmp_path: Path) -> None:
    folder = _stylegan_folder(tmp_path / "sg")
    report = run_parity(folder)
    assert report.ok, report.format()
    assert len(report.checks) == 5


def test_other_fomm_options_pass(tmp_path: Path) -> None:
    config = {"common_params": {"num_kp": 5, "num_channels": 3, "estimate_jacobian": True},
              "kp_detector_params": {"temperature": 0.2, "block_expansion": 4, "max_features": 16,
                                     "scale_factor": 0.5, "num_blocks": 2},
              "generator_params": {"block_expansion": 4, "max_features": 16, "num_down_blocks": 1,
                                   "num_bottleneck_blocks": 1, "estimate_occlusion_map": True,
                                   "dense_motion_params": {"block_expansion": 4, "max_features": 16,
                                                           "num_blocks": 2, "scale_factor": 0.5}},
              "normalize_kp": {"use_relative_movement": True, "use_relative_jacobian": True,
                               "adapt_movement_scale": True}}
    torch.manual_seed(2)
    common = config["common_params"]
    det = fomm.KPDetector(**config["kp_detector_params"], **common).eval()
    gen = fomm.OcclusionAwareGenerator(**config["generator_params"], **common).eval()
    with torch.no_grad():
        det.kp.weight.mul_(10)
    inputs = {"source": torch.rand(2, 3, 32, 32), "driving_initial": torch.rand(2, 3, 32, 32)}
    inputs["driving"] = 0.6 * inputs["driving_initial"] + 0.4 * torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        kps = {k: det(v) for k, v in inputs.items()}
        norm = fomm.normalize_kp(kps["source"], kps["driving"], kps["driving_initial"], **config["normalize_kp"])
        out = gen(inputs["source"], kp_driving=norm, kp_source=kps["source"])
    expected = {"kp_source_value": kps["source"]["value"], "kp_norm_value": norm["value"],
                "kp_norm_jacobian": norm["jacobian"], "prediction": out["prediction"], "deformed": out["deformed"]}
    folder = write_vector_folder(tmp_path / "fomm", config, {k: v.numpy() for k, v in inputs.items()},
                                 {k: v.numpy() for k, v in expected.items()},
                                 {"kp_detector_weights.npz": det.state_dict(),
                                  "generator_weights.npz": gen.state_dict()})
    report = run_parity(folder)
    assert report.ok, report.format()


def test_other_e4e_options_pass(tmp_path: Path) -> None:
    """Another number of styles (stylegan_size 64 -> 10) and another phase salt, weights from the formula."""
    encoder, latent_avg = formula_e4e(64, salt=3)
    x = torch.rand(1, 3, 64, 64) * 2 - 1  # the encoder runs at any size divisible by 16; 64 keeps this fast
    with torch.no_grad():
        codes = encoder(x)
        c3 = encoder.backbone(x)[2]
    config = {"stylegan_size": 64, "style_count": 10, "phase_salt": 3}
    folder = write_vector_folder(tmp_path / "e4e", config, {"x": x.numpy()},
                                 {"codes": codes.numpy(), "w_plus": (codes + latent_avg).numpy(),
                                  "latent_avg": latent_avg.numpy(), "c3": c3.numpy()}, {})
    report = run_parity(folder)
    assert report.ok, report.format()
    assert codes.shape == (1, 10, 512)


def test_a_wrong_array_fails_and_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    shutil.copytree(VECTORS / "stylegan2_small", folder)
    with np.load(folder / "expected.npz") as e:
        arrays = {k: e[k] for k in e.files}
    arrays["img_trunc"] = arrays["img_trunc"] + 1e-3  # beyond atol 1e-4 + rtol 1e-4 * |x| for most pixels
    arrays["mystery"] = np.zeros(3, np.float32)
    np.savez(folder / "expected.npz", **arrays)
    report = run_parity(folder)
    assert not report.ok
    failed = {c.name: c.note for c in report.checks if not c.passed}
    assert set(failed) == {"img_trunc", "mystery"}
    assert failed["mystery"] == "no recipe for this array"


def test_bad_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ParityError, match="not a folder"):
        run_parity(tmp_path / "missing")
    (tmp_path / "x").mkdir()
    with pytest.raises(ParityError, match=r"config\.json: missing"):
        run_parity(tmp_path / "x")
    (tmp_path / "x" / "config.json").write_text("{}")
    with pytest.raises(ParityError, match="cannot tell the architecture"):
        run_parity(tmp_path / "x")
    folder = tmp_path / "w"
    shutil.copytree(VECTORS / "stylegan2_small", folder)
    config = json.loads((folder / "config.json").read_text())
    config["init_kwargs"]["w_dim"] = 32
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ParityError, match="weights do not fit"):
        run_parity(folder)
