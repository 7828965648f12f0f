"""A session's frame processor: its face stage (live tracking, or a baked title's tracks) and its painter, driven by
the session's control state; and what a viewer chose (`Choice`) with the painter that draws it (`Painter`), which a
live channel uses once per choice for all its viewers. Confined to one worker thread."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Choice:
    """What a viewer sees, as a key: the original (recast off), or a cast for every face, casts by track and edits.
    Viewers with equal choices see the same picture (a live channel draws it once for all of them)."""

    enabled: bool = False
    cast: str = ""
    casts_by_track: tuple[tuple[int, str], ...] = ()
    edits: tuple[tuple[str, float], ...] = ()

    @classmethod
    def of(cls, state: ControlState) -> Choice:
        if not state.enabled:
            return ORIGINAL
        return cls(True, state.cast, tuple(sorted(state.casts_by_track.items())),
                   tuple(sorted((k, v) for k, v in state.edits.items() if v != 0)))


ORIGINAL = Choice()


class Painter:
    """Draws a choice on a frame's faces with its own recaster (which remembers each track's cast)."""

    def __init__(self, recaster: Recaster, options: RenderOptions,
                 on_failed: Callable[[int], None] | None = None) -> None:
        self.renderer = FaceRenderer(recaster, badge=options.badge, occlusion=options.occlusion,
                                     mark_id=options.mark_id)
        self.recaster, self.on_failed = recaster, on_failed
        self._chosen: Choice | None = None

    def paint(self, frame: Frame, faces: list[FaceState], choice: Choice) -> np.ndarray:
        """The picture to send: recast when the choice is, the original otherwise."""
        if not choice.enabled or not faces:
            return frame.image
        if choice != self._chosen:  # a held recast shows the choice it was drawn with
            self.renderer.drop_held()
            self._chosen = choice
        by_track = dict(choice.casts_by_track)
        for face in faces:
            wanted = by_track.get(face.track_id) or choice.cast
            if wanted:
                self.recaster.assign(face.track_id, wanted)
        self.recaster.set_edits(dict(choice.edits))
        image = frame.image.copy()
        rendered = self.renderer.render(image, faces)
        if rendered.failed and self.on_failed is not None:
            self.on_failed(rendered.failed)
        return image


class FrameProcessor:
    """The per-session face stage and painter, driven by the session's control state; confined to one worker
    thread."""

    def __init__(self, recaster: Recaster, state: ControlState, options: RenderOptions,
                 predictor: LandmarkPredictor | None = None, on_failed: Callable[[int], None] | None = None,
                 baked: dict[int, list[FaceState]] | None = None) -> None:
        self.stage: LiveFaceStage | BakedFaceStage
        if baked is not None:
            self.stage = BakedFaceStage(baked)
        else:
            self.stage = LiveFaceStage(make_tracker(options, predictor), options.lookahead)
        self.painter = Painter(recaster, options, on_failed)
        self.recaster = recaster
        self.state = state

    def loop_every(self, frames: int) -> None:
        """The title plays on repeat, `frames` a pass, its frame indices running on: a baked title's tracks are
        found by the frame of the pass."""
        if isinstance(self.stage, BakedFaceStage):
            self.stage.cycle = frames

    def push(self, frame: Frame) -> list[tuple[Frame, list[FaceState]]]:
        return [(f, faces) for f, faces, _ in self.stage.push(frame)]

    def render(self, frame: Frame, faces: list[FaceState]) -> np.ndarray:
        """The picture to send: recast when the toggle is on, the original otherwise."""
        return self.painter.paint(frame, faces, Choice.of(self.state))
