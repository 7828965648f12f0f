"""What every recaster's face goes through before it is pasted (warp, fomm, stylegan alike): the actor's own mouth
interior, the actor's colour (steadied per track) and light, the cast's gaze moved to the actor's, and the
detail of the shot; each track carries its colour, light, gaze and landmark filters from frame to frame."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np

from stream.look.colour import ColorStats, ColouredTexture, apply_color, color_stats
from stream.look.detail import Softening, match_detail
from stream.look.features import INNER_MOUTH
from stream.look.filters import OneEuro, keep_recent
from stream.look.gaze import SPAN_STEADY, cast_gaze
from stream.look.lids import TrackLids
from stream.look.light import Lighting, transfer_light
from stream.look.masks import polygon_mask
from stream.look.paste import blend
from stream.perception.mesh import EyeReading

MOUTH_BLUR = 1.5  # px: the softening of the mouth interior's edge
COLOR_STEADY = 0.3  # the share of a new colour measurement taken each frame (the light changes slowly)


@dataclass
class TrackLook:
    """What a track carries from frame to frame, so its face does not flicker: the colour statistics, the light's
    ratio, the gaze shift, the softening blur and the open eyes, each an exponential average, and the filters of its
    landmarks and mesh."""

    color: ColorStats | None = None
    texture: ColouredTexture | None = None  # the cast's texture in this colour, where the recaster draws from one
    gaze: dict[int, np.ndarray] = field(default_factory=dict)
    points: OneEuro = field(default_factory=OneEuro)
    mesh: OneEuro = field(default_factory=OneEuro)  # the dense mesh's points, where the tracker gives them
    light: Lighting = field(default_factory=Lighting)
    soften: Softening = field(default_factory=Softening)  # the blur that softens a crisp portrait to the shot
    lids: TrackLids = field(default_factory=TrackLids)  # the open eyes of the actor, the warp's lids, the 68 points
    spans: np.ndarray | None = None  # where the actor's eyes visibly lie between the mesh's corners, averaged
    read: EyeReading | None = None  # the iris model's last reading of the eyes, for the frames it skips

    def steady_color(self, stats: ColorStats) -> ColorStats:
        """The track's colour statistics with this frame's measurement taken in (COLOR_STEADY of it)."""
        self.color = stats if self.color is None else self.color + COLOR_STEADY * (stats - self.color)
        return self.color


class Finish:
    """The steps a recast face goes through before it is pasted, the same for every recaster: the actor's own
    mouth interior where the mouth opens (`mouth`; teeth and tongue never smear), the actor's colour (`color`)
    and light (`light`, with the colour unless told), the cast's irises moved to the actor's gaze (`gaze`), and
    the shot's detail (`detail`). A recaster whose face is not drawn on the actor's landmarks (FOMM moves the
    cast's own mouth and eyes) leaves `mouth` and `gaze` off."""

    def __init__(self, *, color: bool = True, light: bool | None = None, mouth: bool = False, gaze: bool = False,
                 detail: bool = True) -> None:
        self.color, self.mouth, self.gaze, self.detail = color, mouth, gaze, detail
        self.light = color if light is None else light
        self._looks: dict[int, TrackLook] = {}

    def fresh(self) -> Finish:
        """The same steps with no track state (a session's own)."""
        other = copy.copy(self)
        other._looks = {}
        return other

    def look(self, track_id: int) -> TrackLook:
        look = self._looks.pop(track_id, None)
        return keep_recent(self._looks, track_id, look if look is not None else TrackLook())

    def __call__(self, face: np.ndarray, actor: np.ndarray, points: np.ndarray, mask: np.ndarray,
                 look: TrackLook, kept: float = 1.0, spans: np.ndarray | None = None,
                 cast_spans: np.ndarray | None = None) -> np.ndarray:
        """`face` ([N,N,3] uint8, drawn on `points`) finished against the `actor`'s crop, inside `mask`; `spans`
        and `cast_spans` where the actor's and the cast's eyes visibly lie (mesh.EyeReading), for the gaze."""
        if self.mouth:
            face = self.blend_mouth(face, actor, points, look)
        if self.color:
            # over the whole face: statistics of the skin alone match skin tones more closely, but move the
            # identity towards the actor's (d20: d_cast 0.479 against 0.449) and flicker more
            stats = color_stats(face, actor, mask)
            if stats is not None:
                face = apply_color(face, look.steady_color(stats))
        if self.light:
            face = transfer_light(face, actor, points, mask, look.light)
        if self.gaze:
            if spans is not None and np.all(np.isfinite(spans)):  # a face's own bias: averaged slowly
                look.spans = spans if look.spans is None else look.spans + SPAN_STEADY * (spans - look.spans)
            # the cast's eyes look where the actor's do
            face = cast_gaze(face, actor, points, look.gaze, look.spans, cast_spans)
        if self.detail:
            # the grain and focus of the shot
            face = match_detail(face, actor, points, mask, memory=look.soften, kept=kept)
        return face

    def blend_mouth(self, face: np.ndarray, actor: np.ndarray, points: np.ndarray, look: TrackLook) -> np.ndarray:
        """`face` with the actor's mouth interior (teeth, tongue) blended in over the inner lips, softened by
        MOUTH_BLUR px; made in the inner lips' box alone (over the whole crop it cost 0.5 ms a face). Where the
        recaster coloured the face before it came here (the warp colours its texture), the interior is put in the
        face's colour: teeth and tongue then change with the face's colour as they do when the finished face is
        coloured whole, and stay as steady."""
        n = face.shape[0]
        reach = math.ceil(4 * MOUTH_BLUR) + 2  # the blur's kernel and the polygon's anti-aliased edge
        x0, y0 = np.maximum(np.floor(points[INNER_MOUTH].min(axis=0)).astype(int) - reach, 0)
        x1, y1 = np.minimum(np.ceil(points[INNER_MOUTH].max(axis=0)).astype(int) + reach + 1, n)
        if x1 <= x0 or y1 <= y0:
            return face
        inner = polygon_mask(points[INNER_MOUTH] - (x0, y0), (int(y1 - y0), int(x1 - x0)), blur=MOUTH_BLUR)
        if not inner.any():
            return face
        theirs = np.ascontiguousarray(actor[y0:y1, x0:x1])
        if not self.color and look.color is not None:
            theirs = apply_color(theirs, look.color)
        out = face.copy()
        out[y0:y1, x0:x1] = blend(face[y0:y1, x0:x1], theirs, inner)
        return out
