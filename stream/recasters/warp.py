"""The `warp` recaster, the CPU default: a cast portrait, aligned once, warped per frame (piecewise affine over
the 68 landmarks, densely over the mesh where there is one) onto the actor's landmarks, so it follows head
motion, expression and blinks; finished like every recaster's face (stream/look/finish.py)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from stream.casts.cast import Cast, CastError
from stream.casts.preparation import CAST_TEXTURE, prepare_cast
from stream.look.blinks import POINT_LIDS, eyes_to_read, lower_lids
from stream.look.finish import Finish
from stream.look.masks import face_mask
from stream.perception.hog import LandmarkPredictor
from stream.perception.stills import DEFAULT_DETECTOR, still_faces
from stream.recasters.contract import CastingRecaster, Description, FaceCrop

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from stream.perception.mesh import EyeOpenings


class WarpRecaster(CastingRecaster):
    """Classical landmark-driven face replacement; several casts, one per track (round robin by default)."""

    name = "warp"

    def __init__(self, casts: Sequence[Cast], *, size: int = CAST_TEXTURE, color: bool = True,
                 predictor: LandmarkPredictor | None = None, detector: str = DEFAULT_DETECTOR,
                 blinks: bool = True) -> None:
        if not casts:
            raise CastError("the warp recaster needs at least one cast image")
        # each cast is prepared once as a `size` px texture; a face is recast at its own size in the frame (the
        # renderer's crop), so a large face is not upsampled from a small one. Up to 384 px: a 720p close-up's
        # crop (420) loses a tenth of its scale and the live path keeps real time
        self.crop_size = None
        self.max_crop = 384
        self.finish = Finish(color=color, mouth=True, gaze=True)
        # the cast's lids follow the actor's blinks as MediaPipe's iris model reads them (the mesh's barely close)
        self._eyes = _eye_openings() if blinks else None  # shared by the sessions' copies
        faces = still_faces(detector, predictor)  # the tracker's own landmark model: the warp maps one onto the other
        self._casts = {c.cast_id: prepare_cast(c, size, faces, detector) for c in casts}
        # where each cast's eyes visibly lie between its corners, read once on its texture (the gaze's other half)
        self._cast_spans = {k: self._eyes(p.image, p.landmarks).spans if self._eyes is not None else None
                            for k, p in self._casts.items()}
        super().__init__([c.cast_id for c in casts])

    @property
    def casts(self) -> list[Cast]:
        return [self._casts[c].cast for c in self._order]

    def texture(self, cast_id: str) -> np.ndarray:
        """The cast's prepared texture ([N,N,3] RGB, the aligned face)."""
        return self._casts[cast_id].image

    def session_copy(self) -> WarpRecaster:
        """A recaster for one more viewer: the prepared casts (read-only) shared, the track assignments its own."""
        other = copy.copy(self)
        other._assigned, other.finish = {}, self.finish.fresh()
        return other

    def recast(self, face: FaceCrop) -> tuple[np.ndarray, np.ndarray]:
        cast_id = self.cast_for(face.track_id)
        prepared = self._casts[cast_id]
        n = face.image.shape[0]
        look = self.finish.look(face.track_id)
        points = look.points(face.landmarks, n)  # steady when still, quick when moving
        reading = None if self._eyes is None or not eyes_to_read(points, look.lids) else \
            self._eyes(face.image, face.landmarks)
        open_points = points
        if reading is not None:  # the 68 points' lids too: the gaze and the masks read the eyes' openings from them
            look.read = reading
            points = lower_lids(points, POINT_LIDS, reading.openings, look.lids.points)
        # where the eyes visibly lie is averaged every frame, from the last reading on the frames the model skips
        spans = None if look.read is None else look.read.spans
        if face.mesh is not None and prepared.dense is not None:
            # the dense mesh, nearest drawn last: a turned face's far side is hidden behind its nose, not stretched
            dense, ids = prepared.dense
            mesh = look.mesh(face.mesh[ids, :2], n, scale_of=face.landmarks)
            open_mesh = mesh
            if reading is not None:
                mesh = lower_lids(mesh, prepared.mesh_lids, reading.openings, look.lids.mesh)
            texture = dense.warp(prepared.rgba, mesh, n, depth=face.mesh[ids, 2],
                                 under_points=open_mesh[dense.under_ids])
        else:
            texture = prepared.warp.warp(prepared.rgba, points, n, under_points=open_points[prepared.warp.under_ids])
        # the portrait's hair left out (its alpha): the actor's own forehead shows there
        mask = face_mask(points, n) * (texture[..., 3].astype(np.float32) / 255.0)
        return self.finish(np.ascontiguousarray(texture[..., :3]), face.image, points, mask, look, face.kept,
                           spans, self._cast_spans[cast_id]), mask

    def describe(self) -> Description:
        return {"engine": self.name, "casts": [c.describe() for c in self.casts]}


def _eye_openings() -> EyeOpenings | None:
    """mesh.EyeOpenings, or None (logged) where its model is missing: the recast's lids then follow the mesh's."""
    from stream.perception.mesh import EyeOpenings
    from stream.perception.model_files import ModelMissing

    try:
        return EyeOpenings()
    except ModelMissing as err:
        log.warning("the recast's eyes do not follow blinks: %s", err)
        return None
