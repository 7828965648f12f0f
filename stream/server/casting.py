"""The recasters the service composes for its sessions, built once at start-up: the warp casts prepared once and
shared, the casts registered with a FOMM checkpoint (one recaster per checkpoint), their thumbnails; each session
gets its own copies (its own track assignments), with a baked title's `actor` where the title has one. No HTTP
and no WebRTC here, so a session's recaster is built in a test without an app."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stream.casts.cast import Cast
from stream.casts.preparation import thumbnail
from stream.perception.hog import LandmarkPredictor, hog_detector
from stream.recasters.contract import Recaster
from stream.recasters.routing import ByCastRecaster
from stream.recasters.warp import WarpRecaster
from stream.server.titles import ACTOR_CAST, Title


class Casting:
    """The casts a service offers and the recaster of each session."""

    def __init__(self, casts: Sequence[Cast], detector: str, device: str = "cpu") -> None:
        # one landmark model (~100 MB) and one set of prepared casts for every session; dlib's predictor is
        # stateless per call, and a session's recaster copy has its own track assignments
        self.detector, self.device = detector, device
        self.predictor: LandmarkPredictor | None = None
        if detector == "hog":
            self.predictor = LandmarkPredictor()
            hog_detector()  # built once now, before serving: each session's detector is then a 1.5 ms copy
        self.template = WarpRecaster([c for c in casts if c.fomm is None], predictor=self.predictor,
                                     detector=detector)
        self.animated = self._animated([c for c in casts if c.fomm is not None])
        self.thumbnails = {c.cast_id: thumbnail(c.prepared.rgba[..., :3] if c.prepared is not None and c.fomm
                                                else self.template.texture(c.cast_id)) for c in casts}

    def _animated(self, casts: list[Cast]) -> dict[str, Recaster]:
        """The casts registered with a FOMM checkpoint, each played by a FOMM recaster (one per checkpoint)."""
        if not casts:
            return {}
        from engines.checkpoints import open_checkpoint
        from stream.recasters.learned import FOMMRecaster

        by_file: dict[Path, list[Cast]] = {}
        for cast in casts:
            by_file.setdefault(cast.fomm or Path(), []).append(cast)
        animated: dict[str, Recaster] = {}
        for path, group in by_file.items():
            recaster = FOMMRecaster(open_checkpoint(path, "fomm"), group, device=self.device,
                                    predictor=self.predictor, detector=self.detector)
            animated.update({c.cast_id: recaster for c in group})
        return animated

    def engine_of(self, cast_id: str) -> str:
        return "fomm" if cast_id in self.animated else "warp"

    def new_recaster(self, title: Title | None) -> Recaster:
        """A session's recaster: the warp casts (prepared once, shared), the casts animated by FOMM, and the
        title's `actor` when baked."""
        casts = self.template.session_copy()
        copies: dict[int, Recaster] = {}  # one session copy per FOMM recaster, whichever of its casts is chosen
        engines = {c: copies.setdefault(id(r), r.session_copy()) for c, r in self.animated.items()}
        if title is not None and title.actor is not None:
            engines[ACTOR_CAST] = title.actor.session_copy()
        return ByCastRecaster(casts, engines) if engines else casts
