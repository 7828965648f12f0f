"""Routing by cast: one recaster per cast (the warp casts, the FOMM casts, a baked title's actor) behind one
Recaster, so a session switches between them by cast id."""

from __future__ import annotations

import numpy as np

from stream.recasters.contract import Description, FaceCrop, Recaster
from stream.recasters.warp import WarpRecaster


class ByCastRecaster(Recaster):
    """A session's recaster when some casts are served by other engines: a track whose cast is one of ``engines``
    (the baked title's ``actor``, rendered by its tuned generator; a cast registered with a FOMM checkpoint) goes
    there, every other track to ``casts``."""

    def __init__(self, casts: WarpRecaster, engines: dict[str, Recaster]) -> None:
        self.casts, self.engines = casts, engines
        self.name = "+".join([casts.name, *(e.name for e in engines.values())])
        self._engine_of: dict[int, str] = {}

    def cast_ids(self) -> list[str]:
        return [*self.engines, *(c for c in self.casts.cast_ids() if c not in self.engines)]

    def assign(self, track_id: int, cast_id: str) -> None:
        if cast_id in self.engines:
            self._engine_of[track_id] = cast_id
            engine = self.engines[cast_id]
            if cast_id in engine.cast_ids():  # an engine with several casts (FOMM) plays the one chosen
                engine.assign(track_id, cast_id)
        else:
            self.casts.assign(track_id, cast_id)
            self._engine_of.pop(track_id, None)

    def edit_names(self) -> list[str]:
        return sorted({name for engine in self.engines.values() for name in engine.edit_names()})

    def _for(self, track_id: int) -> Recaster:
        name = self._engine_of.get(track_id)
        return self.casts if name is None else self.engines[name]

    def size_for(self, track_id: int) -> int | None:
        return self._for(track_id).size_for(track_id)

    def recast(self, face: FaceCrop) -> tuple[np.ndarray, np.ndarray]:
        return self._for(face.track_id).recast(face)

    def set_edits(self, factors: dict[str, float]) -> None:
        super().set_edits(factors)
        for engine in self.engines.values():
            engine.set_edits({k: v for k, v in factors.items() if k in engine.edit_names()})

    def session_copy(self) -> ByCastRecaster:
        return ByCastRecaster(self.casts.session_copy(), {k: e.session_copy() for k, e in self.engines.items()})

    def describe(self) -> Description:
        return {"engine": self.name, "parts": [self.casts.describe(), *(e.describe() for e in self.engines.values())]}
