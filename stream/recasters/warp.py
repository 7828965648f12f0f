"""The `warp` recaster, the CPU default: a cast portrait, aligned once, warped per frame (piecewise affine over
the 68 landmarks, densely over the mesh where there is one) onto the actor's landmarks, so it follows head
motion, expression and blinks; finished like every recaster's face (stream/look/finish.py)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

from stream.casts.cast import Cast, CastError
from stream.casts.preparation import CAST_TEXTURE, prepare_cast
from stream.look.blinks import POINT_LIDS, eyes_to_read, lower_lids
from stream.look.colour import colour_texture, lab_stats
from stream.look.finish import Finish, TrackLook
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
        # the actor's colour is put into the cast's texture (per track, again when it changes; measured on each frame
        # for the next), not onto each frame's warped face: the same picture for a fraction of the cost
        # (look.colour.colour_texture)
        self.color = color
        self.finish = Finish(color=False, light=color, mouth=True, gaze=True)
        # the cast's lids follow the actor's blinks as MediaPipe's iris model reads them (the mesh's barely close)
        self._eyes = _eye_openings() if blinks else None  # shared by the sessions' copies
        faces = still_faces(detector, predictor)  # the tracker's own landmark model: the warp maps one onto the other
        self._casts = {c.cast_id: prepare_cast(c, size, faces, detector) for c in casts}
        # where each cast's eyes visibly lie between its corners, read once on its texture (the gaze's other half)
        self._cast_spans = {k: self._eyes(p.image, p.landmarks).spans if self._eyes is not None else None
                            for k, p in self._casts.items()}
        # each cast's own colour statistics over its face, and where its texture is drawn (alpha over 0)
        self._cast_colours = {k: (lab_stats(p.image, face_mask(p.landmarks, p.image.shape[0]) * _alpha(p.rgba)),
                                  _drawn_box(p.rgba)) for k, p in self._casts.items()}
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
        hull = face_mask(points, n)
        rgba = self._texture(cast_id, face.image, hull, look)
        if face.mesh is not None and prepared.dense is not None:
            # the dense mesh, nearest drawn last: a turned face's far side is hidden behind its nose, not stretched
            dense, ids = prepared.dense
            mesh = look.mesh(face.mesh[ids, :2], n, scale_of=face.landmarks)
            open_mesh = mesh
            if reading is not None:
                mesh = lower_lids(mesh, prepared.mesh_lids, reading.openings, look.lids.mesh)
            texture = dense.warp(rgba, mesh, n, depth=face.mesh[ids, 2], under_points=open_mesh[dense.under_ids])
        else:
            texture = prepared.warp.warp(rgba, points, n, under_points=open_points[prepared.warp.under_ids])
        # the portrait's hair left out (its alpha): the actor's own forehead shows there
        mask = hull * _alpha(texture)
        self._recolour(cast_id, face.image, mask, look)  # for the next frame
        return self.finish(cv2.cvtColor(texture, cv2.COLOR_RGBA2RGB), face.image, points, mask, look, face.kept,
                           spans, self._cast_spans[cast_id]), mask

    def _texture(self, cast_id: str, actor: np.ndarray, hull: np.ndarray, look: TrackLook) -> np.ndarray:
        """The cast's texture in the track's colour as measured up to the last frame; on a track's first frame (or
        first with this cast) measured on the actor's face hull."""
        rgba = self._casts[cast_id].rgba
        if look.texture is None or look.texture.source is not rgba:
            self._recolour(cast_id, actor, hull, look)
        return look.texture.rgba if look.texture is not None and look.texture.source is rgba else rgba

    def _recolour(self, cast_id: str, actor: np.ndarray, mask: np.ndarray, look: TrackLook) -> None:
        """This frame's colour measurement (the actor's colour statistics inside the face's mask, against the
        cast's own) taken into the track's, and its texture coloured again where that moved. The mask is the face
        as pasted, the portrait's hair left out: the actor's forehead under it changes with the pose and light (on
        d0 the hull alone made the face flicker more, 0.97 against 0.95)."""
        ours, box = self._cast_colours[cast_id]
        theirs = lab_stats(actor, mask) if self.color and ours is not None else None
        if theirs is not None:
            stats = look.steady_color(np.concatenate([ours, theirs]))
            look.texture = colour_texture(self._casts[cast_id].rgba, stats, look.texture, box)

    def describe(self) -> Description:
        return {"engine": self.name, "casts": [c.describe() for c in self.casts]}


def _alpha(rgba: np.ndarray) -> np.ndarray:
    """An RGBA picture's alpha as a float mask in 0..1."""
    return cv2.extractChannel(rgba, 3).astype(np.float32) * np.float32(1 / 255)


def _drawn_box(rgba: np.ndarray) -> tuple[int, int, int, int]:
    """The rectangle (x0, y0, x1, y1) of a texture where its alpha is not 0."""
    x, y, w, h = cv2.boundingRect((cv2.extractChannel(rgba, 3) > 0).astype(np.uint8))
    return (x, y, x + w, y + h) if w and h else (0, 0, rgba.shape[1], rgba.shape[0])


def _eye_openings() -> EyeOpenings | None:
    """mesh.EyeOpenings, or None (logged) where its model is missing: the recast's lids then follow the mesh's."""
    from stream.perception.mesh import EyeOpenings
    from stream.perception.model_files import ModelMissing

    try:
        return EyeOpenings()
    except ModelMissing as err:
        log.warning("the recast's eyes do not follow blinks: %s", err)
        return None
