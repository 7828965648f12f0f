"""Networks replayed from CUDA graphs (engines/graphs.py): the same outputs as eager calls, a copy per call, a
fall-back for what cannot be captured, and a plain call on the CPU."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from engines import fomm, stylegan2
from engines.graphs import Graphed
from tests.engine_helpers import small_fomm, small_stylegan

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")


def _driver(device: str) -> fomm.Driver:
    detector, generator, config = small_fomm()
    ckpt = SimpleNamespace(kind="fomm", path="fomm_small", config=config,
                           modules={"kp_detector": detector, "generator": generator})
    return fomm.Driver(ckpt, device)


def _frames(n: int, size: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [(rng.random((size, size, 3)) * 255).astype(np.uint8) for _ in range(n)]


def test_on_the_cpu_a_graphed_call_is_the_call_itself() -> None:
    calls: list[torch.Tensor] = []

    def double(x: torch.Tensor) -> torch.Tensor:
        calls.append(x)
        return 2 * x

    graphed = Graphed(double)
    x = torch.arange(4.0)
    assert torch.equal(graphed(x), 2 * x)
    assert calls == [x] and graphed.captured == 0


@pytest.mark.gpu
@needs_cuda
def test_a_graphed_synthesis_replays_what_eager_computes_and_keeps_each_output() -> None:
    G, _ = small_stylegan()
    engine = stylegan2.SynthesisEngine(G).cuda().eval()
    graphed = Graphed(engine)
    rng = np.random.default_rng(0)
    wss = [torch.from_numpy(rng.standard_normal((1, G.num_ws, G.w_dim)).astype(np.float32)).cuda() for _ in range(3)]
    with torch.inference_mode():
        eager = [engine(ws) for ws in wss]
        replayed = [graphed(ws) for ws in wss]  # the first captures, the others replay with new inputs
    scale = max(float(e.abs().max()) for e in eager)
    for got, want in zip(replayed, eager, strict=True):
        # fp32 rounding, not TF32 (~1e-3): cuDNN may pick other kernels inside a capture; measured 2e-5 on an H200
        assert float((got - want).abs().max()) / scale < 2e-4
    assert float((replayed[0] - replayed[1]).abs().max()) / scale > 1e-2  # outputs are copies, not one buffer
    with torch.inference_mode():
        graphed(torch.cat(wss[:2]))  # another shape, another graph
    assert graphed.captured == 2


@pytest.mark.gpu
@needs_cuda
def test_a_call_that_cannot_be_captured_runs_eagerly(caplog: pytest.LogCaptureFixture) -> None:
    def synced(x: torch.Tensor) -> torch.Tensor:  # .item() waits on the host: not allowed while capturing
        return x * float(x.sum().item())

    graphed = Graphed(synced)
    x = torch.arange(1.0, 5.0, device="cuda")
    with caplog.at_level(logging.WARNING, logger="engines.graphs"):
        for _ in range(2):
            assert torch.allclose(graphed(x), x * 10.0)
    assert graphed.captured == 0
    assert sum("capture" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.gpu
@needs_cuda
def test_graphs_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECAST_CUDA_GRAPHS", "0")
    graphed = Graphed(lambda x: x + 1)
    assert torch.equal(graphed(torch.zeros(3, device="cuda")), torch.ones(3, device="cuda"))
    assert graphed.captured == 0


@pytest.mark.gpu
@needs_cuda
def test_the_fomm_driver_on_a_gpu_animates_as_on_the_cpu() -> None:
    """The driver's keypoints and generator replay from graphs on a GPU; frame after frame they agree with the
    CPU's eager calls (stated tolerance 1e-3 of the [0,1] image before rounding to uint8: two levels)."""
    frames = _frames(4)
    results = {}
    for device in ("cpu", "cuda"):
        driver = _driver(device)
        source = driver.source(frames[0])
        initial = driver.keypoints(frames[1])
        results[device] = [driver.animate(source, driver.keypoints(f), initial) for f in frames[1:]]
        if device == "cuda":
            assert driver._detect.captured == 1 and driver._predict.captured == 1
    for cpu, gpu in zip(results["cpu"], results["cuda"], strict=True):
        assert np.abs(cpu.astype(int) - gpu.astype(int)).max() <= 2

    def apart(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a.astype(float) - b).mean())

    for i, gpu in enumerate(results["cuda"]):  # each replay is its own frame's, not a buffer left by another
        others = [apart(gpu, cpu) for j, cpu in enumerate(results["cpu"]) if j != i]
        assert apart(gpu, results["cpu"][i]) < 0.5 * min(others)
