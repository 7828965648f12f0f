"""A session's frame processor: its face stage (live tracking, or a baked title's tracks) and its renderer, driven
by the session's control state. Confined to one worker thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from stream.media.sources import Frame
from stream.perception.face_stage import BakedFaceStage, LiveFaceStage
from stream.perception.hog import LandmarkPredictor
from stream.perception.track_set import FaceState
from stream.recasters.contract import Recaster
from stream.render.options import RenderOptions
from stream.render.pipeline import make_tracker
from stream.render.renderer import FaceRenderer
from stream.server.control import ControlState


class FrameProcessor:
    """The per-session face stage and renderer; confined to one worker thread."""

    def __init__(self, recaster: Recaster, state: ControlState, options: RenderOptions,
                 predictor: LandmarkPredictor | None = None, on_failed: Callable[[int], None] | None = None,
                 baked: dict[int, list[FaceState]] | None = None) -> None:
        self.stage: LiveFaceStage | BakedFaceStage
        if baked is not None:
            self.stage = BakedFaceStage(baked)
        else:
            self.stage = LiveFaceStage(make_tracker(options, predictor), options.lookahead)
        self.renderer = FaceRenderer(recaster, badge=options.badge, occlusion=options.occlusion)
        self.recaster = recaster
        self.state = state
        self.on_failed = on_failed
        self._chosen: tuple[Any, ...] = ()

    def loop_every(self, frames: int) -> None:
        """The title plays on repeat, `frames` a pass, its frame indices running on: a baked title's tracks are
        found by the frame of the pass."""
        if isinstance(self.stage, BakedFaceStage):
            self.stage.cycle = frames

    def push(self, frame: Frame) -> list[tuple[Frame, list[FaceState]]]:
        return [(f, faces) for f, faces, _ in self.stage.push(frame)]

    def render(self, frame: Frame, faces: list[FaceState]) -> np.ndarray:
        """The picture to send: recast when the toggle is on, the original otherwise."""
        if not self.state.enabled or not faces:
            return frame.image
        chosen = (self.state.cast, sorted(self.state.casts_by_track.items()), sorted(self.state.edits.items()))
        if chosen != self._chosen:  # a held recast shows the choice it was drawn with
            self.renderer.drop_held()
            self._chosen = chosen
        for face in faces:
            wanted = self.state.casts_by_track.get(face.track_id) or self.state.cast
            if wanted:
                self.recaster.assign(face.track_id, wanted)
        self.recaster.set_edits(self.state.edits)
        image = frame.image.copy()
        rendered = self.renderer.render(image, faces)
        if rendered.failed and self.on_failed is not None:
            self.on_failed(rendered.failed)
        return image
