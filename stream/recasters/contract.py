"""The Recaster contract: a per-face processor takes an aligned crop of a tracked face and returns the face
to paste back and its mask; casting recasters play named casts; `identity` returns the crop unchanged (it
proves the geometry: the output equals the input within encoding noise)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from stream.casts.cast import CastError
from stream.look.masks import face_mask

# what a recaster says of itself (its engine, its casts or title): JSON, written into a rendered file's metadata
JSONValue = str | int | float | bool | None | Sequence["JSONValue"] | Mapping[str, "JSONValue"]
Description = Mapping[str, JSONValue]


@dataclass
class FaceCrop:
    """What a recaster gets: the aligned crop and the actor's landmarks in crop pixels."""

    track_id: int
    image: np.ndarray  # [N,N,3] uint8 RGB
    landmarks: np.ndarray  # [68,2] crop pixels
    index: int = -1  # the frame's index in the title (baked recasters look up that frame's latent)
    mesh: np.ndarray | None = None  # [468,3] the mesh tracker's points in crop pixels and their depth
    kept: float = 1.0  # the share of the frame's crispness the crop keeps once pasted back (look.paste.crispness_kept)


class Recaster(ABC):
    """A per-face processor. ``crop_size`` None means "the face's own size in the frame"."""

    name: str = "base"
    synthetic: bool = True  # frames it touches get the provenance badge
    crop_size: int | None = None
    max_crop: int = 512  # with crop_size None: the largest crop a face is recast at
    # head yaw (degrees) up to which the recast is whole, and past which it is faded out entirely (the face then
    # passes through); between the two it blends in and out smoothly (see stream.render.renderer.pose_weight)
    usable_yaw: tuple[float, float] = (30.0, 50.0)

    @abstractmethod
    def recast(self, face: FaceCrop) -> tuple[np.ndarray, np.ndarray]:
        """The face to paste ([N,N,3] uint8) and its blend mask ([N,N] float32, 0..1)."""

    def describe(self) -> Description:
        return {"engine": self.name}

    def size_for(self, track_id: int) -> int | None:
        """The crop size for this track's faces (a recaster that dispatches per track may answer per track)."""
        return self.crop_size

    # --- what a viewer may change (the service's control channel offers exactly this) ---------------------------

    def cast_ids(self) -> list[str]:
        """The casts a viewer may choose among; none for a recaster with one look (identity, a title's actor)."""
        return []

    def assign(self, track_id: int, cast_id: str) -> None:
        """Play `cast_id` on a track's faces from the next frame on; a cast it does not offer is an error."""
        if cast_id not in self.cast_ids():
            raise CastError(f"the {self.name} recaster has no cast {cast_id!r} (it has {self.cast_ids()})")

    def edit_names(self) -> list[str]:
        """The latent edits a viewer may set (a baked StyleGAN title's directions); none by default."""
        return []

    def set_edits(self, factors: dict[str, float]) -> None:
        """The viewer's edits, name -> factor (0 is off); an edit it does not offer is an error."""
        unknown = sorted(set(factors) - set(self.edit_names()))
        if unknown:
            raise CastError(f"the {self.name} recaster has no edit {unknown} (it has {self.edit_names()})")

    def session_copy(self) -> Recaster:
        """The recaster for one more viewer: what is loaded shared, the viewer's choices its own. A recaster that
        holds no choice is shared as it is."""
        return self


class CastingRecaster(Recaster):
    """A recaster with several casts, one per track: round robin by track id until a viewer chooses."""

    def __init__(self, cast_ids: Sequence[str]) -> None:
        self._order = list(cast_ids)
        self._assigned: dict[int, str] = {}

    def cast_ids(self) -> list[str]:
        return list(self._order)

    def assign(self, track_id: int, cast_id: str) -> None:
        super().assign(track_id, cast_id)
        self._assigned[track_id] = cast_id

    def cast_for(self, track_id: int) -> str:
        return self._assigned.get(track_id) or self._order[(track_id - 1) % len(self._order)]


class IdentityRecaster(Recaster):
    name = "identity"
    synthetic = False
    usable_yaw = (90.0, 90.0)  # a geometry check: never faded

    def recast(self, face: FaceCrop) -> tuple[np.ndarray, np.ndarray]:
        return face.image, face_mask(face.landmarks, face.image.shape[0])
