"""LiteRT interpreters for the MediaPipe models, made the same way for every model."""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stream.media.machine import usable_cores

_first = threading.Lock()
_quieted = False


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null meanwhile (native code writes there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def interpreter(model: Path, threads: int = 1) -> Any:
    """A LiteRT interpreter with its tensors allocated. The first one in a process makes LiteRT print "INFO:
    Created TensorFlow Lite XNNPACK delegate for CPU." on stderr (no setting turns it off), which would break the
    CLI's one-line error contract; it is created with stderr pointed at /dev/null. The service makes its first one
    at start-up, before it serves."""
    from ai_edge_litert.interpreter import Interpreter

    global _quieted
    with _first:
        if not _quieted:
            with _stderr_silenced():
                made = Interpreter(model_path=str(model), num_threads=threads)
                made.allocate_tensors()
            _quieted = True
            return made
    made = Interpreter(model_path=str(model), num_threads=threads)
    made.allocate_tensors()
    return made


class LiteModel:
    """One model on LiteRT: its single input, and a run that sets the input and reads the outputs asked for. An
    interpreter is not thread-safe: each run takes an idle one, and threads that run the model at once (the faces of
    a frame drawn side by side) get one each, made when first needed, up to `copies` (then they wait)."""

    def __init__(self, model: Path, threads: int = 1, copies: int | None = None) -> None:
        self._model, self._threads = model, threads
        first = interpreter(model, threads)
        self._input = first.get_input_details()[0]["index"]
        outputs = first.get_output_details()
        self.by_width = [d["index"] for d in sorted(outputs, key=lambda d: int(d["shape"][-1]))]  # narrowest first
        self.by_name = {d["name"]: d["index"] for d in outputs}
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._idle.put(first)
        self._made = 1
        self._most = copies or usable_cores()
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray, *outputs: int) -> list[np.ndarray]:
        """The outputs (by index) for one input batch (float32, the model's input shape)."""
        worker = self._take()
        try:
            worker.set_tensor(self._input, batch)
            worker.invoke()
            return [worker.get_tensor(index) for index in outputs]
        finally:
            self._idle.put(worker)

    def _take(self) -> Any:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            make = self._made < self._most
            if make:
                self._made += 1
        return interpreter(self._model, self._threads) if make else self._idle.get()
