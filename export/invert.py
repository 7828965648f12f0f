"""e4e inversion: every face of a track aligned at the generator's size (STIT's crop) and encoded to a W+ pivot.

`aligned_crops` decodes the title once for the faces wanted; with `every` > 1 only every N-th face of a track is
inverted and the pivots between are interpolated linearly in W+.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from engines.images import to_tensor
from engines.official import Checkpoint
from stream.look.align import alignment, crop
from stream.media.sources import MediaSource
from stream.perception.track_set import TrackSet

Crops = dict[int, tuple[list[int], np.ndarray]]  # track id -> (rows taken, crops [n,size,size,3] uint8)


def aligned_crops(location: str | Path, tracks: TrackSet, size: int, every: int = 1) -> Crops:
    """Per track: the rows (positions in the track) taken and their crops [n,size,size,3] uint8, aligned on the
    smoothed quad (STIT's crop). Decoding stops after the last frame with a face wanted."""
    wanted: dict[int, dict[int, int]] = {}  # frame -> {track: row}
    for track in tracks.tracks:
        for row, face in enumerate(track.faces):
            if row % every == 0 or row == len(track.faces) - 1:
                wanted.setdefault(face.index, {})[track.track_id] = row
    rows: dict[int, list[int]] = {t.track_id: [] for t in tracks.tracks}
    images: dict[int, list[np.ndarray]] = {t.track_id: [] for t in tracks.tracks}
    faces = {t.track_id: t.faces for t in tracks.tracks}
    last = max(wanted) if wanted else -1
    with MediaSource(location, keep_audio=False) as source:
        for frame in source.frames():
            if frame.index > last:
                break
            for track_id, row in wanted.get(frame.index, {}).items():
                face = faces[track_id][row]
                rows[track_id].append(row)
                images[track_id].append(crop(frame.image, alignment(face.crop_params, size)))
    return {t: (rows[t], np.stack(images[t])) for t in rows if rows[t]}


def interpolate_rows(rows: list[int], values: np.ndarray, count: int) -> np.ndarray:
    """Latents for every row of a track from those of the sampled rows (linear in W+)."""
    if len(rows) == count:
        return values
    flat = values.reshape(len(rows), -1)
    out = np.stack([np.interp(np.arange(count), rows, flat[:, j]) for j in range(flat.shape[1])], axis=1)
    return out.reshape(count, *values.shape[1:]).astype(np.float32)


class Inverter:
    """An e4e checkpoint ready to encode crops; `encoder_size` is the resize e4e reads."""

    def __init__(self, encoder: Checkpoint, encoder_size: int, batch: int = 8) -> None:
        from engines.e4e import E4EEngine, Encoder4Editing

        module = encoder.modules["encoder"]
        assert isinstance(module, Encoder4Editing)
        self.engine = E4EEngine(module, encoder.tensors["latent_avg"]).eval()
        self.size, self.batch = encoder_size, batch

    @torch.no_grad()
    def pivots(self, rows: list[int], images: np.ndarray, count: int,
               on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """The W+ pivots [count, styles, 512] of a track's `count` faces from the crops of its sampled `rows`."""
        codes = []
        for i in range(0, len(images), self.batch):
            codes.append(self.engine(to_tensor(images[i : i + self.batch], size=self.size)).numpy())
            if on_batch is not None:
                on_batch(len(codes[-1]))
        return interpolate_rows(rows, np.concatenate(codes).astype(np.float32), count)
