"""Replaying a network's call from a captured CUDA graph.

At batch 1 the networks' kernels are small and a GPU waits on Python to launch them: measured on an H200
(`benchmarks/gpu_engines.py`), StyleGAN2 synthesis at 1024 px took 12.6 ms a call eager in fp16 and 5.9 ms replayed
from a graph, a FOMM face (keypoints and generator at 256 px) 5.7 ms and 2.6 ms, with the same outputs.

`Graphed(fn)` captures ``fn`` once per set of input shapes on its first CUDA call and replays it after; on the CPU,
with ``RECAST_CUDA_GRAPHS=0``, or where a capture fails (logged once), it calls ``fn`` as it is. Outputs are
copies, so a caller may keep them across calls.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch.utils import _pytree as pytree

log = logging.getLogger(__name__)

MAX_GRAPHS = 4  # shapes captured per call site (batch sizes, crop sizes); the least recently used goes first
WARMUP_CALLS = 3  # eager calls on a side stream before a capture: lazy initialisation and cuDNN's choices


def graphs_enabled() -> bool:
    return os.environ.get("RECAST_CUDA_GRAPHS", "1") != "0"


class _Captured:
    def __init__(self, fn: Callable[..., Any], inputs: tuple[torch.Tensor, ...]) -> None:
        self.inputs = tuple(t.clone() for t in inputs)  # the graph reads these buffers: each call copies into them
        side = torch.cuda.Stream(inputs[0].device)
        side.wait_stream(torch.cuda.current_stream(inputs[0].device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                fn(*self.inputs)
        torch.cuda.current_stream(inputs[0].device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = fn(*self.inputs)

    def __call__(self, inputs: tuple[torch.Tensor, ...]) -> Any:
        for buffer, value in zip(self.inputs, inputs, strict=True):
            buffer.copy_(value)
        self.graph.replay()
        return pytree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, self.outputs)


class Graphed:
    """``fn(*tensors)`` (returning tensors, or tuples/dicts of them) replayed from a CUDA graph per input shape."""

    def __init__(self, fn: Callable[..., Any], max_graphs: int = MAX_GRAPHS) -> None:
        self.fn, self.max_graphs = fn, max_graphs
        self._graphs: OrderedDict[tuple[Any, ...], _Captured] = OrderedDict()
        self._failed: set[tuple[Any, ...]] = set()
        self._lock = threading.Lock()  # one set of input buffers per graph: calls from several threads take turns

    def __call__(self, *inputs: torch.Tensor) -> Any:
        if not (inputs and inputs[0].is_cuda and graphs_enabled()):
            return self.fn(*inputs)
        key = tuple((t.shape, t.dtype, t.device) for t in inputs)
        with self._lock, torch.inference_mode():
            if key in self._failed:
                return self.fn(*inputs)
            captured = self._graphs.get(key)
            if captured is None:
                try:
                    captured = _Captured(self.fn, inputs)
                except Exception as err:  # a network that syncs with the host inside cannot be captured: run eager
                    log.warning("CUDA graph capture of %s failed (%s); running it eagerly", _name(self.fn), err)
                    self._failed.add(key)
                    torch.cuda.synchronize(inputs[0].device)
                    return self.fn(*inputs)
                self._graphs[key] = captured
                while len(self._graphs) > self.max_graphs:
                    self._graphs.popitem(last=False)
            self._graphs.move_to_end(key)
            return captured(inputs)

    @property
    def captured(self) -> int:
        return len(self._graphs)


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__
