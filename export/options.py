"""The bake's options, typed, and free of PyTorch so that a cache hit never loads it.

Each stage's cache key is made of whole option dataclasses (`dataclasses.asdict`), never of hand-picked fields:
an option added to one of them is in its stage's key by construction. The few fields that change how a stage runs
but not what it makes are named in `NOT_IN_KEY`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stream.render.options import RenderOptions

if TYPE_CHECKING:
    from engines.directions import Direction


@dataclass
class PTIOptions:
    steps: int = 300
    scope: str = "title"  # title: one tuned generator; track: one per track
    lr: float = 3e-4
    batch: int = 4
    l2_weight: float = 1.0
    lpips_weight: float = 1.0  # used only with `lpips` weights
    lpips: str | None = None  # path to local LPIPS weights (never fetched)
    checkpoint_every: int = 25
    seed: int = 0


@dataclass(frozen=True)
class StitchOptions:
    steps: int = 100  # per segment (STIT: 100 per frame)
    segment: int = 25  # faces per segment
    lr: float = 3e-4
    batch: int = 4
    content_weight: float = 0.01  # STIT's content_loss_lambda
    threshold: float = 0.002  # stop once the border loss (mean squared, [-1,1] units) is under it
    band: float = 0.04  # border band half-width, as a fraction of the crop size
    seed: int = 0


@dataclass(frozen=True)
class RenditionOptions:
    """What `recast bake --renditions` encodes: the title's original and a recast per cast (export/renditions.py)."""

    casts: tuple[str, ...] = ()  # cast ids (built-in or registered); none: no renditions
    registry: str | None = None  # the cast registry's folder (None: the default one)
    gop_s: float = 0.5  # a keyframe at least this often, on the same frames in every rendition
    crf: int = 23  # x264's constant quality ...
    max_kbps: int = 2500  # ... within this peak rate (VBV), so a relayed stream fits a viewer's link


@dataclass
class BakeOptions:
    render: RenderOptions = field(default_factory=RenderOptions)  # its tracking part decides the tracks
    encoder_size: int = 256  # e4e reads a resize of the aligned crop
    every: int = 1  # invert and tune on every N-th face of a track (pivots for the others are interpolated)
    pti: PTIOptions = field(default_factory=PTIOptions)
    export: tuple[str, ...] = ()  # "onnx", "plan"
    max_frames: int | None = None  # bake only the first N frames
    edits: tuple[tuple[Direction, float], ...] = ()  # bake-time edits, stitched per track segment
    stitch: StitchOptions = field(default_factory=StitchOptions)
    segment_executor: str = "local"  # where stitching segments run: local | ray
    renditions: RenditionOptions = field(default_factory=RenditionOptions)


# fields that change when or where a stage's work runs, not what it makes
NOT_IN_KEY = {"PTIOptions": {"checkpoint_every"}, "RenditionOptions": {"registry"}}


def key_part(options: Any) -> dict[str, Any]:
    """An option dataclass as a key part: every field but those in `NOT_IN_KEY`."""
    from dataclasses import asdict

    left_out = NOT_IN_KEY.get(type(options).__name__, set())
    return {k: v for k, v in asdict(options).items() if k not in left_out}
