"""A session's processing without WebRTC, as pipecat's `run_test` drives a pipeline: control messages in and
replies out, frames in and the pictures the session would send out. It builds exactly what `recast serve` builds
for a viewer (the casting's recaster for the title, `Session`, its frame processor), minus the app and the peer
connection, so each control rule is one short test (tests/test_control.py); the real-peer and browser scenarios stay in
tests/test_server*.py and tests/test_browser.py."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from stream.casts.cast import Cast
from stream.media.sources import Frame
from stream.render.options import RenderOptions
from stream.server.casting import Casting
from stream.server.metrics import Registry
from stream.server.sessions import Session
from stream.server.titles import Title


class SessionHarness:
    def __init__(self, casts: Sequence[Cast], title: Title | None = None,
                 options: RenderOptions | None = None) -> None:
        options = options or RenderOptions()
        self.casting = Casting(casts, options.detector)
        self.metrics = Registry()
        self.session = Session("test-key", self.metrics, self.casting.new_recaster(title),
                               {c.cast_id: c for c in casts}, title, options, self.casting.predictor)
        # one mark id for every harness session (a session's own is its random id), so that their pictures compare
        self.session.options = dataclasses.replace(self.session.options, mark_id="session:harness")
        self.processor = self.session.processor()

    def send(self, message: Any) -> dict[str, Any]:
        """One control message (an object is sent as JSON; str and bytes as they are); the session's reply."""
        raw = message if isinstance(message, str | bytes) else json.dumps(message)
        return self.session.handle_control(raw)

    def play(self, images: Iterable[np.ndarray], start: int = 0) -> dict[int, np.ndarray]:
        """Frames through the session's processor: frame index -> the picture it would send. The live face stage
        holds a short look-ahead back, so the last frames pushed come out with the next call (or never)."""
        out = {}
        for index, image in enumerate(images, start):
            frame = Frame(index, index * 3600, Fraction(1, 90000), image)
            for ready, faces in self.processor.push(frame):
                out[ready.index] = self.processor.render(ready, faces)
        return out

    def counted(self, kind: str, outcome: str) -> float:
        """The control counter of the service's metrics for one type and outcome."""
        return self.metrics.control.value(type=kind, outcome=outcome)
