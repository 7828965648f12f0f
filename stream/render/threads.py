"""The threads beside the renderer: decode ahead (newest frame wins on a live source), encode behind, and
the per-stage timer. Bounded queues only."""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

import numpy as np

from stream.media.sinks import MediaSink
from stream.media.sources import Frame

T = TypeVar("T")
_DONE = object()


class StageTimer:
    """Milliseconds spent per named stage, summed over frames (thread-safe)."""

    def __init__(self) -> None:
        self._totals: dict[str, float] = collections.defaultdict(float)
        self._counts: dict[str, int] = collections.defaultdict(int)
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float, count: int = 1) -> None:
        with self._lock:
            self._totals[stage] += seconds
            self._counts[stage] += count

    def ms_per_frame(self, frames: int) -> dict[str, float]:
        with self._lock:
            return {k: round(v * 1e3 / max(frames, 1), 3) for k, v in self._totals.items()}


class Prefetch(Generic[T]):
    """Run an iterator in a thread behind a bounded queue.

    With ``drop_old`` the queue keeps the newest items: when the consumer falls behind, the oldest waiting
    item is dropped and counted (live sources); without it the producer waits (files: every frame counts).
    """

    def __init__(self, items: Iterable[T], maxsize: int = 8, drop_old: bool = False,
                 timer: StageTimer | None = None, stage: str = "decode") -> None:
        self._items = items
        self._queue: queue.Queue[Any] = queue.Queue(maxsize)
        self._drop_old = drop_old
        self._stop = threading.Event()
        self.dropped = 0
        self._timer = timer
        self._stage = stage
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"recast-{stage}", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                if self._drop_old and item is not _DONE:
                    try:
                        self._queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass

    def _run(self) -> None:
        try:
            iterator = iter(self._items)
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                if self._timer is not None:
                    self._timer.add(self._stage, time.perf_counter() - start)
                self._put(item)
        except BaseException as exc:  # handed to the consumer, raised there
            self._error = exc
        finally:
            self._put(_DONE)

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def close(self, wait: bool = False) -> None:
        """Stop the thread; wait for it to end (at most 5 s, or for as long as it takes with `wait`: the thread still
        reads from what is about to be closed)."""
        self._stop.set()
        self._thread.join(timeout=None if wait else 5)


class ThreadedWriter:
    """Encode and mux in a thread behind a bounded queue (the caller waits when it is full)."""

    def __init__(self, sink: MediaSink, audio: collections.deque[Any], timer: StageTimer,
                 maxsize: int = 8) -> None:
        self.sink = sink
        self._audio = audio
        self._timer = timer
        self._queue: queue.Queue[Any] = queue.Queue(maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="recast-encode", daemon=True)
        self._thread.start()

    def write(self, frame: Frame, image: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((frame, image))

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not _DONE:
                frame, image = item
                start = time.perf_counter()
                self.sink.write(frame, image)
                self.sink.write_audio(self._audio, until=frame.time + 0.5)
                self._timer.add("encode", time.perf_counter() - start)
        except BaseException as exc:
            self._error = exc
            while self._queue.get() is not _DONE:  # keep draining so the producer never blocks
                pass

    def close(self) -> None:
        self._queue.put(_DONE)
        self._thread.join()
        if self._error is None:
            self.sink.write_audio(self._audio)
        self.sink.close()
        if self._error is not None:
            raise self._error
