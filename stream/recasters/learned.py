"""The learned recasters (PyTorch; imported only where one is asked for), playing a baked title
(stream/perception/baked_title.py).

- ``stylegan``: the title's tuned generator renders the pivot of that frame, with the edits chosen at playback
  (directions, STIT or InterFaceGAN arithmetic). The face stays the actor's; the edits change age, smile, ...
- ``fomm``: a registered cast face is driven by the actor's crop: FOMM keypoints of the actor (baked, or computed
  when the bake has none), motion relative to the track's first frame, the cast's portrait as the source.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from engines import fomm
from engines.cache import CacheError
from engines.checkpoints import generator_of, open_checkpoint
from engines.directions import Direction, apply_direction, fits
from engines.formats import FORMATS
from engines.graphs import Graphed
from engines.images import to_uint8
from engines.official import Checkpoint
from engines.runtime import Engine, open_engine
from stream.casts.cast import Cast, CastError
from stream.casts.preparation import prepare_cast
from stream.look.finish import Finish
from stream.look.masks import face_mask
from stream.perception.baked_title import BakedTitle
from stream.perception.hog import LandmarkPredictor
from stream.perception.stills import DEFAULT_DETECTOR, still_faces
from stream.recasters.contract import CastingRecaster, Description, FaceCrop, Recaster

log = logging.getLogger(__name__)
RUNTIMES = {name: fmt.ours for name, fmt in FORMATS.items()}  # the stylegan recaster's file per runtime


def finished(finish: Finish, image: np.ndarray, face: FaceCrop) -> tuple[np.ndarray, np.ndarray]:
    """A network's face through the compositor every recaster shares (stream.look.finish.Finish) and its mask."""
    mask = face_mask(face.landmarks, image.shape[0])
    if face.image.shape != image.shape:  # the crop is always the network's size; a caller's other size: as drawn
        return image, mask
    return finish(image, face.image, face.landmarks, mask, finish.look(face.track_id), face.kept), mask


class StyleGANRecaster(Recaster):
    """The tuned generator on the frame's pivot, plus edits (name -> (direction, factor)) set at playback."""

    name = "stylegan"

    def __init__(self, title: BakedTitle, device: str = "cpu", directions: Sequence[Direction] = (),
                 runtime: str = "torch") -> None:
        if not title.baked("pivots") or not title.baked("pti"):
            raise CacheError(f"{title.entry.folder}: the StyleGAN stages are not baked (run `recast bake` with "
                             "--generator and --encoder)")
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime {runtime!r}: one of {', '.join(RUNTIMES)}")
        self.title, self.device, self.runtime = title, device, runtime
        # the actor's own face, edited: the shot's detail, but not the actor's colour (an edit may change it)
        self.finish = Finish(color=False)
        self.edits: dict[str, tuple[Direction, float]] = {}
        self._generators: dict[Path, Checkpoint] = {}
        self._synthesis: dict[Path, Graphed] = {}  # replayed from CUDA graphs on a GPU (engines/graphs.py)
        self._engines: dict[Path, Engine] = {}
        first = title.tracks.tracks[0].track_id if title.tracks.tracks else 0
        generator = generator_of(self._generator(first))
        self.crop_size = int(generator.img_resolution)
        styles = int(generator.num_ws)
        self.directions = {d.name: d for d in directions if fits(d, styles)}
        if runtime != "torch":
            self._engine(first)  # a missing or stale export fails here, not on the first face

    def session_copy(self) -> StyleGANRecaster:
        """A recaster for one more viewer: the title and the loaded generators shared, the edits its own."""
        other = copy.copy(self)
        other.edits, other.finish = {}, self.finish.fresh()
        return other

    def set_edit(self, direction: Direction, factor: float) -> None:
        if factor == 0:
            self.edits.pop(direction.name, None)
        else:
            self.edits[direction.name] = (direction, factor)

    def edit_names(self) -> list[str]:
        return sorted(self.directions)

    def set_edits(self, factors: dict[str, float]) -> None:
        """The viewer's edits by direction name (from the control channel)."""
        if factors != self._factors():
            super().set_edits(factors)
            self.edits = {name: (self.directions[name], factor) for name, factor in factors.items() if factor != 0}

    def _generator(self, track_id: int) -> Checkpoint:
        path = self.title.generator_file(track_id)
        if path not in self._generators:
            self._generators[path] = open_checkpoint(path, "stylegan2")
            self._generators[path].modules["generator"].to(self.device)
        return self._generators[path]

    def _synthesise(self, track_id: int, w: torch.Tensor) -> torch.Tensor:
        path = self.title.generator_file(track_id)
        if path not in self._synthesis:
            synthesis = generator_of(self._generator(track_id)).synthesis
            self._synthesis[path] = Graphed(lambda ws: synthesis(ws, noise_mode="const"))
        return self._synthesis[path](w)

    def _engine(self, track_id: int) -> Engine:
        """The exported synthesis network (ONNX Runtime, or a TensorRT plan whose header must match this GPU)."""
        path = self.title.generator_file(track_id, RUNTIMES[self.runtime])
        if path not in self._engines:
            device = self.device if self.runtime == "onnx" else "cuda"
            self._engines[path] = open_engine(path, device)
        return self._engines[path]

    @torch.no_grad()
    def recast(self, face: FaceCrop) -> tuple[np.ndarray, np.ndarray]:
        row = self.title.row(face.track_id, face.index)
        stitched = self.title.stitched(face.track_id) if self.edits else None
        if stitched is not None and row in stitched[1] and stitched[0] == self._factors():
            # the bake stitched exactly these edits: its seamless crop, no synthesis
            return finished(self.finish, stitched[1][row], face)
        pivot = self.title.pivots(face.track_id)[row]
        w = torch.from_numpy(pivot)[None].to(self.device)
        for direction, factor in self.edits.values():
            w = apply_direction(w, direction, factor)
        if self.runtime == "torch":
            image = to_uint8(self._synthesise(face.track_id, w))[0]
        else:
            image = to_uint8(self._engine(face.track_id).run_device({"ws": w})["img"])[0]  # uint8 leaves the GPU
        return finished(self.finish, image, face)

    def _factors(self) -> dict[str, float]:
        return {name: factor for name, (_, factor) in self.edits.items()}

    def describe(self) -> Description:
        return {"engine": self.name, "title": self.title.id, "runtime": self.runtime, "edits": self._factors()}


class FOMMRecaster(CastingRecaster):
    """A cast portrait animated by the actor's motion (relative to each track's first frame)."""

    name = "fomm"

    def __init__(self, ckpt: Checkpoint, casts: Sequence[Cast], title: BakedTitle | None = None,
                 device: str = "cpu", predictor: LandmarkPredictor | None = None, detector: str = DEFAULT_DETECTOR
                 ) -> None:
        if ckpt.kind != "fomm":
            raise CastError(f"{ckpt.path}: holds a {ckpt.kind} network, not FOMM")
        if not casts:
            raise CastError("the fomm recaster needs at least one cast image")
        self.title = title
        self.driver = fomm.Driver(ckpt, device, relative=True)
        self.crop_size = self.driver.size
        faces = still_faces(detector, predictor)
        self.casts = {cast.cast_id: self.driver.source(prepare_cast(cast, self.crop_size, faces, detector).image)
                      for cast in casts}
        super().__init__([c.cast_id for c in casts])
        self._initial: dict[int, fomm.Keypoints] = {}
        # the cast's own mouth and eyes, moved by FOMM (not drawn on the actor's landmarks): colour and detail only
        self.finish = Finish(color=True)

    def session_copy(self) -> FOMMRecaster:
        """A recaster for one more viewer: the network and the prepared casts shared; the track assignments and
        each track's first keypoints its own."""
        other = copy.copy(self)
        other._assigned, other._initial, other.finish = {}, {}, self.finish.fresh()
        return other

    def _driving(self, face: FaceCrop) -> tuple[fomm.Keypoints, fomm.Keypoints]:
        """This frame's keypoints and the track's first, baked when the bake has them."""
        baked = self.title.keypoints(face.track_id) if self.title is not None else None
        if baked is not None and self.title is not None:
            row = self.title.row(face.track_id, face.index)
            position = int(np.searchsorted(baked["rows"], row))
            if position < len(baked["rows"]) and int(baked["rows"][position]) == row:
                def kp(i: int) -> fomm.Keypoints:
                    return {"value": torch.from_numpy(baked["value"][i : i + 1]).to(self.driver.device),
                            "jacobian": torch.from_numpy(baked["jacobian"][i : i + 1]).to(self.driver.device)}

                return kp(position), kp(0)
        current = self.driver.keypoints(face.image)
        return current, self._initial.setdefault(face.track_id, current)

    def recast(self, face: FaceCrop) -> tuple[np.ndarray, np.ndarray]:
        kp_driving, kp_initial = self._driving(face)
        return finished(self.finish, self.driver.animate(self.casts[self.cast_for(face.track_id)], kp_driving,
                                                         kp_initial), face)

    def describe(self) -> Description:
        return {"engine": self.name, "casts": self.cast_ids()}
