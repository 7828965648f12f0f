"""One Engine surface over PyTorch, ONNX Runtime and TensorRT; every network round-trips through ONNX."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from engines import e4e, fomm, stylegan2
from engines.runtime import (
    FORMATS,
    EngineError,
    OnnxRuntimeEngine,
    TorchEngine,
    dense_view,
    format_for,
    open_engine,
    plan_mismatch,
    read_plan,
    write_plan,
)
from export.onnx import check_onnx, export_onnx
from tests.engine_helpers import formula_e4e, small_fomm, small_stylegan
from tests.official_formats import write_network_pickle

# Stated tolerances of the ONNX round trip (max abs error against eager PyTorch at fp32, batches 1 and 3).
# Measured: StyleGAN2 ~8e-6 on images spanning about +-10, FOMM keypoints ~4e-6, prediction ~2e-7, e4e ~1e-6.
ROUND_TRIP_ATOL = 1e-4


def test_format_table_drives_dispatch() -> None:
    assert format_for("a/ffhq.pkl").name == "torch"
    assert format_for("vox-cpk.pth.tar").name == "torch"
    assert format_for("g.onnx").name == "onnx"
    assert format_for("g.plan").name == "tensorrt"
    with pytest.raises(EngineError, match="unknown engine suffix"):
        format_for("g.bin")
    assert FORMATS["tensorrt"].devices == ("cuda",)
    with pytest.raises(EngineError, match="tensorrt runs on cuda, not cpu"):
        open_engine("g.plan", device="cpu")


def test_torch_engine_surface() -> None:
    G, _ = small_stylegan()
    engine = open_engine(stylegan2.SynthesisEngine(G))
    assert isinstance(engine, TorchEngine)
    assert [str(s) for s in engine.inputs] == ["ws[batch,10,64]:float32"]
    assert [str(s) for s in engine.outputs] == ["img[batch,3,64,64]:float32"]
    ws = np.random.default_rng(0).standard_normal((2, 10, 64)).astype(np.float32)
    by_name = engine(ws=ws)["img"]
    assert np.array_equal(by_name, engine(ws)["img"])
    with torch.no_grad():
        want = G.synthesis(torch.from_numpy(ws), noise_mode="const", fused_modconv=False).numpy()
    assert np.array_equal(by_name, want)
    assert engine.warmup(1) > 0
    with pytest.raises(EngineError, match="input ws has shape"):
        engine(ws=ws[:, :5])
    with pytest.raises(EngineError, match="inputs"):
        engine(z=ws)
    with pytest.raises(EngineError, match="fp16 needs a CUDA device"):
        open_engine(stylegan2.SynthesisEngine(G), precision="fp16")
    with pytest.raises(EngineError, match="not an engine boundary"):
        open_engine(torch.nn.Linear(2, 2))


def _round_trip(module: torch.nn.Module, path: Path, metadata: dict[str, str] | None = None) -> OnnxRuntimeEngine:
    export_onnx(module, path, metadata)
    trip = check_onnx(module, path, ROUND_TRIP_ATOL)
    assert trip.ok, trip.format()
    engine = open_engine(path)
    assert isinstance(engine, OnnxRuntimeEngine)
    return engine


def test_stylegan2_onnx_round_trip(tmp_path: Path) -> None:
    G, _ = small_stylegan()
    engine = _round_trip(stylegan2.SynthesisEngine(G), tmp_path / "synthesis.onnx",
                         {"architecture": "stylegan2-synthesis", "source_sha256": "abc"})
    assert engine.metadata["architecture"] == "stylegan2-synthesis"
    assert engine.metadata["source_sha256"] == "abc"
    assert engine.metadata["inputs"] == "ws[batch,10,64]:float32"
    assert engine.metadata["opset"] == "18" and engine.metadata["torch_version"] == torch.__version__
    assert engine.providers == ["CPUExecutionProvider"]
    out = engine(np.zeros((5, 10, 64), np.float32))["img"]  # the batch axis is dynamic
    assert out.shape == (5, 3, 64, 64)
    _round_trip(stylegan2.MappingEngine(G, truncation_psi=0.7), tmp_path / "mapping.onnx")


def test_fomm_onnx_round_trip(tmp_path: Path) -> None:
    detector, generator, _config = small_fomm()
    kp = _round_trip(fomm.KeypointEngine(detector, 64), tmp_path / "kp.onnx")
    assert kp.output_names == ["kp_value", "kp_jacobian"]
    anim = _round_trip(fomm.AnimatorEngine(generator, 10, 64), tmp_path / "animator.onnx")
    assert anim.input_names[0] == "source"


@pytest.mark.slow
def test_e4e_onnx_round_trip(tmp_path: Path) -> None:
    encoder, latent_avg = formula_e4e(16)
    engine = _round_trip(e4e.E4EEngine(encoder, latent_avg), tmp_path / "e4e.onnx")
    assert [str(s) for s in engine.outputs] == ["w_plus[batch,6,512]:float32"]


def test_open_engine_on_checkpoints(tmp_path: Path) -> None:
    G, init = small_stylegan()
    path = write_network_pickle(tmp_path / "g.pkl", G, init, with_d=False)
    synthesis = open_engine(path)
    mapping = open_engine(path, part="mapping")
    z = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    ws = mapping(z)["ws"]
    with torch.no_grad():
        want = G(torch.from_numpy(z), None, noise_mode="const", fused_modconv=False).numpy()
    assert np.abs(synthesis(ws)["img"] - want).max() < 1e-5
    with pytest.raises(EngineError, match="has no part 'animator'"):
        open_engine(path, part="animator")


def test_tensorrt_plan_header_and_refusal(tmp_path: Path) -> None:
    header = {"tensorrt_version": "10.3.0", "gpu_arch": "sm_90", "precision": "fp16", "inputs": "ws[batch,18,512]"}
    path = tmp_path / "g.plan"
    write_plan(path, header, b"\x00plan-bytes")
    got, plan = read_plan(path)
    assert got == header and plan == b"\x00plan-bytes"
    assert plan_mismatch(header, "10.3.0", "sm_90") is None
    assert "TensorRT 10.3.0" in (plan_mismatch(header, "10.5.0", "sm_90") or "")
    assert "architecture sm_90" in (plan_mismatch(header, "10.3.0", "sm_89") or "")
    (tmp_path / "raw.plan").write_bytes(b"ftrt....")
    with pytest.raises(EngineError, match="no Recast header"):
        read_plan(tmp_path / "raw.plan")
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(EngineError, match="TensorRT is not installed here"):
            open_engine(path, device="cuda")


def test_buffers_at_the_largest_shape_hold_every_smaller_one_densely_at_one_address() -> None:
    """What the TensorRT engine gives its context once (engines.runtime.dense_view): a smaller batch, or a smaller
    inner size, is the buffer's first elements laid out densely, at the buffer's own address."""
    buffer = torch.zeros(4, 18, 8)
    for shape in [(1, 18, 8), (3, 18, 8), (2, 10, 8), (4, 18, 8)]:
        view = dense_view(buffer, shape)
        assert view.shape == shape and view.is_contiguous() and view.data_ptr() == buffer.data_ptr()
        values = torch.arange(view.numel(), dtype=torch.float32).reshape(shape)
        view.copy_(values)
        assert torch.equal(buffer.view(-1)[:view.numel()], values.view(-1))
    with pytest.raises(EngineError, match=r"larger than the buffer's \[4, 18, 8\]"):
        dense_view(buffer, (5, 18, 8))


def test_run_device_gives_what_run_gives_as_tensors(tmp_path: Path) -> None:
    """run_device (tensors in and out, on the inputs' device) against run (host arrays), for the torch engine (its
    own device path) and ONNX Runtime (through host arrays)."""
    G, _ = small_stylegan()
    ws = np.random.default_rng(4).standard_normal((2, 10, 64)).astype(np.float32)
    for engine in (open_engine(stylegan2.SynthesisEngine(G)),
                   open_engine(export_onnx(stylegan2.SynthesisEngine(G), tmp_path / "s.onnx"))):
        want = engine(ws)["img"]
        got = engine.run_device({"ws": torch.from_numpy(ws)})["img"]
        assert isinstance(got, torch.Tensor) and got.device.type == "cpu"
        assert np.abs(got.float().numpy() - want).max() < 1e-5, engine.runtime


def test_onnx_engine_refuses_a_broken_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(EngineError, match=r"bad\.onnx: onnxruntime cannot load it"):
        open_engine(bad)
    if not torch.cuda.is_available():
        G, _ = small_stylegan()
        path = export_onnx(stylegan2.SynthesisEngine(G), tmp_path / "s.onnx")
        with pytest.raises(EngineError, match="CUDA was asked for"):
            open_engine(path, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_cuda_fp16_engines_track_fp32() -> None:
    G, _ = small_stylegan()
    ws = np.random.default_rng(2).standard_normal((2, 10, 64)).astype(np.float32)
    fp32 = open_engine(stylegan2.SynthesisEngine(G), device="cuda")(ws)["img"]
    fp16 = open_engine(stylegan2.SynthesisEngine(small_stylegan()[0]), device="cuda", precision="fp16")(ws)["img"]
    assert np.abs(fp16 - fp32).max() / np.abs(fp32).max() < 2e-2
    detector, _, _ = small_fomm()
    image = np.random.default_rng(3).random((2, 3, 64, 64)).astype(np.float32)
    kp32 = open_engine(fomm.KeypointEngine(detector, 64), device="cuda")(image)["kp_value"]
    kp16 = open_engine(fomm.KeypointEngine(small_fomm()[0], 64), device="cuda", precision="fp16")(image)["kp_value"]
    assert np.abs(kp16 - kp32).max() < 1e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("tensorrt") is None,
                    reason="needs an NVIDIA GPU and TensorRT")
def test_a_tensorrt_plan_runs_in_its_buffers_on_the_torch_stream(tmp_path: Path) -> None:
    """A plan over batches 1-4: its buffers are allocated once at batch 4, every call runs in them (the same
    addresses), the outputs stay on the GPU, and they follow fp32 PyTorch within fp16's error."""
    from export.tensorrt import build_plan

    G, _ = small_stylegan()
    onnx_path = export_onnx(stylegan2.SynthesisEngine(G), tmp_path / "s.onnx")
    engine = open_engine(build_plan(onnx_path, tmp_path / "s.plan", batch=(1, 2, 4)), device="cuda")
    addresses = {n: b.data_ptr() for n, b in engine.buffers.items()}  # type: ignore[attr-defined]
    assert engine.buffers["ws"].shape[0] == 4  # type: ignore[attr-defined]
    for batch in (1, 3, 4):
        ws = torch.from_numpy(np.random.default_rng(batch).standard_normal((batch, 10, 64)).astype(np.float32))
        got = engine.run_device({"ws": ws.cuda()})["img"]
        assert got.is_cuda and got.shape[0] == batch and got.data_ptr() == addresses["img"]
        with torch.no_grad():
            want = G.synthesis(ws, noise_mode="const", fused_modconv=False)
        assert (got.float().cpu() - want).abs().max() / want.abs().max() < 2e-2
    assert {n: b.data_ptr() for n, b in engine.buffers.items()} == addresses  # type: ignore[attr-defined]


def test_the_command_line_takes_its_runtime_and_format_choices_from_the_table() -> None:
    """`--runtime` (render, serve), `export --format` and `bake --export` list what FORMATS holds, nothing typed
    again; the table is plain data, so reading it loads no PyTorch."""
    import subprocess
    import sys

    from engines.formats import BAKE_EXPORTS, EXPORTS
    from stream.cli.main import build_parser

    def choices(*command: str) -> dict[str, tuple[str, ...]]:
        sub = build_parser()._subparsers._group_actions[0].choices[command[0]]  # type: ignore[union-attr]
        return {a.option_strings[0]: tuple(a.choices) for a in sub._actions if a.choices and a.option_strings}

    assert choices("render")["--runtime"] == choices("serve")["--runtime"] == tuple(FORMATS)
    assert choices("export")["--format"] == EXPORTS == ("onnx", "tensorrt")
    assert BAKE_EXPORTS == ("onnx", "plan")
    probe = "import sys, engines.formats; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"
