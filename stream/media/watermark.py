"""The invisible mark of a recast frame: keyed spread-spectrum patterns, added to the picture around the recast
faces (it spares the faces: spare_faces), that survive what happens to a stream
(WebRTC's VP8 and H.264 at low rates, scaling, a crop that keeps some of what is around the face, a screen capture
re-encoded) and carry a 16-bit payload.

A pattern is a tile of CELLS x CELLS cells repeated over the frame from its top-left corner, a tile's side a sixth
of the frame's shorter side (a scaled copy keeps it a sixth); each cell is a smooth bump added to the three channels
alike (a change of luma only), of STRENGTH_FLAT levels where the picture is flat up to STRENGTH_BUSY where its fine
detail hides it. There are PATTERNS patterns, shown one after another,
FRAMES_PER_PATTERN frames each, each fading into the next (cosine and sine weights: the mark's strength stays the
same while it moves, slowly). That the pattern changes matters more than anything else here: a still picture
correlates with one pattern by chance, the same way in every frame, so summing frames cannot remove it; against a
different pattern each time, chance averages out. The payload is the patterns' signs: bit j is pattern j's sign,
so a reader that knows which pattern it sees knows which bit it reads. The payload: 1 bit for the cast's kind
(synthetic or consented), 11 bits of an id (a render's or a session's), and a 4-bit check.

A reader does not need the original. It resizes a frame's luma so that a candidate tile is TILE_READ pixels,
removes what is smooth (the picture's own low frequencies), divides by the local contrast (where the picture is
busy the mark is drowned, where it is flat it shows) and folds it: the sum of all its tiles, where the pattern adds
up and the picture, which does not repeat with the tile, averages out. Each fold is correlated (circularly: a crop
moves the tiles' origin) with every pattern, and the strongest of them, in size, kept per offset; a window of
WINDOW frames (and, for short stretches, of SHORT_WINDOW frames, or of a shot between cuts) sums these maps, and
the peak's height over the spread of the rest of the map is the window's score (`z`), which a window without the
mark keeps at 7.2 or below (measured on every shared clip and variants of them: docs/provenance.md). The tile's
side is taken to be a sixth of the frame's shorter side first, then searched (a crop makes the frame smaller than the
one marked). Given a face finder, a reader leaves the faces out before it folds: they carry no mark, and in a crop
that is mostly face they drown what is marked.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import av
import cv2
import numpy as np

from stream.media.cuts import CutDetector

CELLS = 8  # a tile is CELLS x CELLS cells
PATTERNS = 16  # patterns shown in turn; pattern j carries payload bit j in its sign
FRAMES_PER_PATTERN = 4  # frames from one pattern to the next (a sixth of a second at 25 fps: a cycle of 64 frames)
# how many levels (of 255) a cell's bump adds or takes away at its centre: STRENGTH_FLAT where the picture is flat,
# up to STRENGTH_BUSY where its detail hides the mark (busy_levels); held at STRENGTH_FLAT for NEAR_FACE of a spared
# face's region around it (spare_faces)
STRENGTH_FLAT, STRENGTH_BUSY = 1.0, 5.0
BUSY_FROM, BUSY_SLOPE = 0.5, 1.5  # from this spread of fine detail (levels), the strength rises so many levels a level
DETAIL_BLUR, DETAIL_SPREAD = 1.5, 3.0  # fine detail: what a blur of this takes away; its spread: over this (pixels)
STRENGTH_SCALE = 4  # the strength is measured and made at a quarter of the picture's size
FACE_FADE, NEAR_FACE = 0.03, 0.05  # a recast face spared, fading out over this of its pasted rectangle's size
Face = tuple[int, int, np.ndarray]  # a recast face: where its pasted rectangle starts (x0, y0) and its blend in it
HEADROOM = 1.5  # two patterns' bumps, fading one into the other, add up to 1.41 of one
TILE_FRACTION = 1 / 6  # a tile's side, as a fraction of the frame's shorter side
TILE_READ = 64  # a tile's side when read
WINDOW = 64  # frames judged together (about two and a half seconds at 25 fps)
SHORT_WINDOW = 24  # and the fewer frames around each, for a short recast stretch among frames without a recast
Z_MARKED = 8.0  # a window's score from which its frames carry the mark (unmarked clips: 7.2 at most, measured)
Z_SIDE = 5.5  # a searched tile side is kept from this score (the windows at it then decide)
SEARCH_EVERY = 4  # a tile side is searched over every 4th frame of a window (more patterns than in a row)
READ_SHORT_SIDE = 360  # frames are read at most this size on their shorter side (WebRTC's 640x360)
COARSE_STEPS, FINE_STEPS = 32, 3  # sides searched: 3 % apart from a sixth of the shorter side, then 0.5 % around
SIDES_SEARCHED = COARSE_STEPS + 2 * FINE_STEPS + 1
SEARCH_AGAIN = 96  # frames judged unmarked in a row before the side is searched for again
# a reader given a face finder leaves the faces out (the renderer spares them: they carry no mark, only the picture's
# chance correlation): each face's outline (the jaw and brows of its 68 points) grown by OUTLINE_GROW about its
# centre, feathered by OUTLINE_FEATHER of the picture's longer side. Above the brows it reads on: the renderer spares
# the pasted face, and a cast's fringe leaves the actor's forehead marked (leaving out the forehead up to the hairline
# read d20 cropped to the face at 83 % of frames, against 100 %). Faces are looked for every FACES_EVERY frames, and the
# last ones found held for up to FACES_HELD frames where the finder misses them (a recast face in a tight crop is
# missed in a third of the frames)
OUTLINE_GROW = 0.05
OUTLINE_FEATHER = 0.02
FACES_EVERY = 4
FACES_HELD = 30
FaceOutlines = Callable[[np.ndarray], list[np.ndarray]]  # RGB picture -> each face's outline, [K,2] pixels
KEY = b"recast-watermark-v1"
MIN_SIDE = 2 * CELLS  # below this a tile's cells are too small to be kept by any encoder: no mark is made or read


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(KEY + repr(parts).encode()).digest()[:8], "little")


@functools.cache
def _cells() -> np.ndarray:
    """The key's cells: [PATTERNS, CELLS, CELLS] of +-1."""
    rng = np.random.default_rng(_seed("cells"))
    return rng.choice([-1.0, 1.0], size=(PATTERNS, CELLS, CELLS)).astype(np.float32)


def _check(value: int) -> int:
    """The 4-bit check of a 12-bit value."""
    return zlib.crc32(KEY + value.to_bytes(2, "little")) & 0xF


@dataclass(frozen=True)
class Payload:
    """What a mark says besides "recast": whether the cast is synthetic (generated) or a consented person's face, and
    11 bits of the id of the render or session that made it."""

    synthetic: bool
    mark_id: int

    @property
    def bits(self) -> int:
        value = (int(self.synthetic) << 11) | (self.mark_id & 0x7FF)
        return (value << 4) | _check(value)

    @classmethod
    def of_bits(cls, bits: int) -> Payload | None:
        """The payload of 16 read bits, or None when their check fails."""
        value = bits >> 4
        if _check(value) != bits & 0xF:
            return None
        return cls(bool(value >> 11), value & 0x7FF)

    @classmethod
    def for_id(cls, synthetic: bool, name: str) -> Payload:
        """The payload for a render's or session's id of any form (11 bits of its hash)."""
        return cls(synthetic, zlib.crc32(name.encode()) & 0x7FF)


def tile_side(width: int, height: int) -> int:
    return round(min(width, height) * TILE_FRACTION)


def _tile(cells: np.ndarray, side: int) -> np.ndarray:
    """A tile of `side` pixels: each cell a smooth bump, continuing across the tile's edges (tiles repeat)."""
    around = np.tile(cells, (3, 3)).astype(np.float32)
    big = cv2.resize(around, (3 * side, 3 * side), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(big[side:2 * side, side:2 * side])


@functools.lru_cache(maxsize=8)
def _tiles(side: int) -> np.ndarray:
    """Every pattern's tile at `side` pixels, its bumps +-1 at their centres: [PATTERNS, side, side]."""
    return np.stack([_tile(cells, side) for cells in _cells()])


def schedule(index: int) -> tuple[tuple[int, float], tuple[int, float]]:
    """The two patterns a frame shows and their weights (cosine and sine: the same strength throughout a fade)."""
    group, step = divmod(index, FRAMES_PER_PATTERN)
    angle = step / FRAMES_PER_PATTERN * math.pi / 2
    return (group % PATTERNS, math.cos(angle)), ((group + 1) % PATTERNS, math.sin(angle))


class Watermark:
    """Marks frames with one payload (a render's, a session's)."""

    def __init__(self, payload: Payload) -> None:
        self.payload = payload
        bits = payload.bits
        self._signs = np.array([1.0 if bits >> j & 1 else -1.0 for j in range(PATTERNS)], np.float32)
        self._local = threading.local()  # each thread's buffers (_work_for)

    def embed(self, image: np.ndarray, index: int, faces: Sequence[Face] = (),
              strength: np.ndarray | None = None) -> None:
        """Add the mark of frame `index` (its place in the stream picks the patterns) to an RGB picture, in place,
        as strong as the picture lets it be around the recast `faces` (`strength_map`, made of the picture itself
        unless given: in every frame, for a busyness measured every other frame changes the mark's strength in
        steps, which s18 recast with s42 showed as flicker, 1.07 against 1.02)."""
        height, width = image.shape[:2]
        side = tile_side(width, height)
        if side < MIN_SIDE:
            return
        if strength is None:
            strength = strength_map(image, faces)
        reps_y, reps_x = -(-height // side), -(-width // side)
        work = self._work_for(height, width, reps_y * side, reps_x * side)
        cv2.resize(strength, (width, height), dst=work.strength, interpolation=cv2.INTER_LINEAR)
        tiles = _tiles(side)
        (first, a), (second, b) = schedule(index)
        tile = tiles[first] * np.float32(a * self._signs[first]) + tiles[second] * np.float32(b * self._signs[second])
        # the tile in 255ths of HEADROOM, times the strength in levels (255ths of STRENGTH_BUSY) when it is applied:
        # rounded to levels once
        fine = tile * np.float32(255 / HEADROOM)
        for layer, apply in ((fine, cv2.add), (-fine, cv2.subtract)):
            cv2.repeat(np.clip(np.rint(layer), 0, 255).astype(np.uint8), reps_y, reps_x, dst=work.repeated)
            cv2.multiply(work.repeated[:height, :width], work.strength, dst=work.layer,
                         scale=HEADROOM * STRENGTH_BUSY / (255 * 255))
            cv2.merge([work.layer, work.layer, work.layer], dst=work.rgb)
            apply(image, work.rgb, dst=image)

    def _work_for(self, height: int, width: int, tiled_height: int, tiled_width: int) -> _Work:
        """This thread's buffers for frames of this size (made once: a frame's worth of new memory each frame costs
        more than the arithmetic done in it)."""
        work: _Work | None = getattr(self._local, "work", None)
        if work is None or work.rgb.shape[:2] != (height, width) or work.repeated.shape != (tiled_height, tiled_width):
            work = _Work(np.empty((height, width), np.uint8), np.empty((tiled_height, tiled_width), np.uint8),
                         np.empty((height, width), np.uint8), np.empty((height, width, 3), np.uint8))
            self._local.work = work
        return work


@dataclass
class _Work:
    """Buffers of a frame's size that Watermark.embed writes into."""

    strength: np.ndarray  # the strength map at the frame's size
    repeated: np.ndarray  # the tile repeated over whole tiles
    layer: np.ndarray  # one sign of the mark, its strength applied
    rgb: np.ndarray  # that in three channels


def strength_map(image: np.ndarray, faces: Sequence[Face] = ()) -> np.ndarray:
    """How strong the mark may be over an RGB picture, at a quarter of its size (uint8: 255 is STRENGTH_BUSY
    levels at a cell's centre): `busy_levels`, the recast faces spared (`spare_faces`)."""
    return spare_faces(busy_levels(image), faces)


def busy_levels(image: np.ndarray) -> np.ndarray:
    """The mark's strength in levels over a picture, at a quarter of its size (float32). Where the picture is flat a
    mark shows, where it is busy the detail hides it: the local spread of the picture's fine detail (what a blur of
    DETAIL_BLUR takes away, spread over DETAIL_SPREAD, at a quarter of the size) sets it, from STRENGTH_FLAT up by
    BUSY_SLOPE levels a level of spread above BUSY_FROM, to STRENGTH_BUSY."""
    height, width = image.shape[:2]
    size = (max(1, width // STRENGTH_SCALE), max(1, height // STRENGTH_SCALE))
    # 4x4 averages in two steps of 2x2 (a bilinear halving is one): what INTER_AREA makes, within a level, a sixth
    # of the time
    half = cv2.resize(luma(image), (2 * size[0], 2 * size[1]), interpolation=cv2.INTER_LINEAR)
    small = cv2.resize(half, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    detail = small - cv2.GaussianBlur(small, (0, 0), DETAIL_BLUR)
    spread = np.sqrt(cv2.GaussianBlur(detail * detail, (0, 0), DETAIL_SPREAD))
    levels = np.clip(STRENGTH_FLAT + (spread - BUSY_FROM) * BUSY_SLOPE, STRENGTH_FLAT, STRENGTH_BUSY)
    return np.asarray(cv2.GaussianBlur(levels, (0, 0), DETAIL_SPREAD / 2))


def spare_faces(levels: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """`busy_levels` with each recast face (where its pasted rectangle starts in the picture, x0 and y0, and its blend
    there: the weight it was pasted with, [h, w] in 0..1) left unmarked: all of its blend (its feathered rim too: a
    scorer's face outline reaches into it), fading out over FACE_FADE of the pasted rectangle's size; the picture
    around that, to NEAR_FACE of it, held at STRENGTH_FLAT (hair beside a face is busy, and a strong mark there
    reaches the face through the encoder: s18 with s42's face, flicker 1.07 against 1.05). Made at the map's quarter
    size. uint8, 255 is STRENGTH_BUSY."""
    out = levels.copy()
    for x0, y0, blend in faces:
        size = (max(1, round(blend.shape[1] / STRENGTH_SCALE)), max(1, round(blend.shape[0] / STRENGTH_SCALE)))
        drawn = cv2.resize((blend > 0.02).astype(np.float32), size, interpolation=cv2.INTER_AREA)
        spared = np.minimum(np.float32(1.0), cv2.GaussianBlur(drawn, (0, 0), max(0.5, FACE_FADE * max(size))) * 2)
        reach = max(1, round(NEAR_FACE * max(size)))
        near = cv2.dilate((spared > 0.02).astype(np.uint8),
                          cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))) > 0
        left, top = round(x0 / STRENGTH_SCALE), round(y0 / STRENGTH_SCALE)
        inside = (slice(max(0, top), min(out.shape[0], top + size[1])),
                  slice(max(0, left), min(out.shape[1], left + size[0])))
        region = out[inside]
        if region.size == 0:
            continue
        own = (slice(inside[0].start - top, inside[0].stop - top), slice(inside[1].start - left, inside[1].stop - left))
        np.minimum(region, np.float32(STRENGTH_FLAT), out=region, where=near[own])
        region *= 1 - spared[own]
    return np.rint(out * np.float32(255 / STRENGTH_BUSY)).astype(np.uint8)


# reading


def luma(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


@functools.cache
def _read_spectra() -> tuple[np.ndarray, float]:
    """Each pattern's tile at TILE_READ pixels, its spectrum's conjugate (for circular correlation), and their norm."""
    tiles = np.stack([_tile(cells, TILE_READ) for cells in _cells()]).astype(np.float64)
    tiles -= tiles.mean(axis=(1, 2), keepdims=True)
    return np.conj(np.fft.fft2(tiles)), float(np.linalg.norm(tiles[0]))


def fold(gray: np.ndarray, side: float, weight: np.ndarray | None = None) -> np.ndarray:
    """The picture resized so that a tile of `side` pixels is TILE_READ, its smooth part removed, divided by its
    local contrast, weighted by `weight` (uint8, 255 read whole, 0 left out, the size of `gray`) where one is
    given, and its tiles (partial ones too) summed into one."""
    scale = TILE_READ / side
    height, width = gray.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    sigma = TILE_READ / CELLS * 0.75
    detail = small - cv2.GaussianBlur(small, (0, 0), sigma)
    detail /= np.sqrt(cv2.GaussianBlur(detail * detail, (0, 0), sigma)) + np.float32(2.0)
    if weight is not None:
        detail *= cv2.resize(weight, size, interpolation=cv2.INTER_AREA).astype(np.float32) * np.float32(1 / 255)
    rows, cols = -(-detail.shape[0] // TILE_READ), -(-detail.shape[1] // TILE_READ)
    padded = np.zeros((rows * TILE_READ, cols * TILE_READ), np.float32)
    padded[:detail.shape[0], :detail.shape[1]] = detail
    return padded.reshape(rows, TILE_READ, cols, TILE_READ).sum(axis=(0, 2))


def correlations(folded: np.ndarray) -> np.ndarray:
    """A fold's normalised circular correlation with every pattern: [PATTERNS, TILE_READ, TILE_READ]."""
    spectra, norm = _read_spectra()
    centred = folded.astype(np.float64) - folded.mean()
    scale = float(np.linalg.norm(centred)) * norm
    if scale == 0.0:
        return np.zeros((PATTERNS, TILE_READ, TILE_READ), np.float32)
    return (np.real(np.fft.ifft2(np.fft.fft2(centred)[None] * spectra)) / scale).astype(np.float32)


def peak_score(summed: np.ndarray) -> tuple[float, tuple[int, int]]:
    """A window's score: its map's peak over the spread of the rest of it (a cell's width around the peak left
    out), and where the peak is."""
    peak = np.unravel_index(int(np.argmax(summed)), summed.shape)
    reach = TILE_READ // CELLS
    rolled = np.roll(summed, (reach - int(peak[0]), reach - int(peak[1])), axis=(0, 1))
    rest = np.ones(summed.shape, bool)
    rest[:2 * reach + 1, :2 * reach + 1] = False
    others = rolled[rest]
    spread = float(others.std())
    if spread == 0.0:
        return 0.0, (int(peak[0]), int(peak[1]))
    return float((summed[peak] - others.mean()) / spread), (int(peak[0]), int(peak[1]))


def strongest(maps: np.ndarray) -> np.ndarray:
    """Per offset, the pattern that correlates most, in size (which pattern a frame shows, and its sign, is not
    known to a reader)."""
    return np.abs(maps).max(axis=0)


@dataclass(frozen=True)
class FrameVerdict:
    """A frame's reading: its window's score, and whether that clears Z_MARKED."""

    index: int
    z: float

    @property
    def marked(self) -> bool:
        return self.z >= Z_MARKED


@dataclass
class _Read:
    index: int
    gray: np.ndarray  # the luma, at most READ_SHORT_SIDE on its shorter side (kept while in the window: a search)
    weight: np.ndarray | None  # where it is read (the faces left out; fold), None for everywhere
    maps: np.ndarray  # its correlation with every pattern at the reader's side
    strong: np.ndarray
    shot: int  # the shot it belongs to (shots are parted by cuts)


def _shot_total(reads: Sequence[_Read], shot: int) -> np.ndarray:
    """The maps of one shot's frames among `reads`, summed."""
    return np.sum([read.strong for read in reads if read.shot == shot], axis=0)


def face_weight(shape: tuple[int, int], outlines: Sequence[np.ndarray]) -> np.ndarray:
    """Where a picture of `shape` holding faces of these outlines (pixels) is read (`fold`'s weight, uint8): 255
    away from them, 0 on each outline grown by OUTLINE_GROW about its centre, feathered by OUTLINE_FEATHER of the
    picture's longer side."""
    height, width = shape
    weight = np.full((height, width), 255, np.uint8)
    for outline in outlines:
        centre = outline.mean(axis=0)
        grown = centre + (outline - centre) * (1.0 + OUTLINE_GROW)
        cv2.fillConvexPoly(weight, cv2.convexHull(np.round(grown * 4).astype(np.int32)), 0, lineType=cv2.LINE_AA,
                           shift=2)
    return np.asarray(cv2.GaussianBlur(weight, (0, 0), max(1.0, OUTLINE_FEATHER * max(height, width))))


def reading_size(gray: np.ndarray) -> np.ndarray:
    """A frame's luma at most READ_SHORT_SIDE on its shorter side (cheaper to read, and all a WebRTC copy has)."""
    height, width = gray.shape
    scale = READ_SHORT_SIDE / min(height, width)
    if scale >= 1.0:
        return gray
    return cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))),
                      interpolation=cv2.INTER_AREA)


class VideoReader:
    """Reads the mark frame after frame, each frame judged by the window of WINDOW frames around it (held back
    until that window is full; the first and last frames of a stretch by its first and last full window, a stretch
    shorter than a window by all of it; `finish` judges what is held), or by a window of SHORT_WINDOW frames that
    holds it, or by its shot where the window holds a cut, where that scores better (a short recast stretch among
    frames without one, or before or after a cut: windows that reach past the cut into frames that carry nothing
    read it lower). A frame is read at a tile side of a sixth of its shorter side (the mark's own, scaled or not);
    when the first full window (and each shot in it), or SEARCH_AGAIN frames in a row, find no mark there, the side
    is searched over the window (a crop changes it) and kept where the mark shows. With a face finder (`faces`), the
    faces are left out of the reading (`face_weight`): in a crop that is mostly face, what is left is the marked
    picture around it (d20 cropped to the face: windows 26-28 with the faces left out, 17-19 with them read; d0's
    crop is read only with them left out). Memory is bounded by the window: a reader can read a file of any
    length."""

    def __init__(self, faces: FaceOutlines | None = None) -> None:
        self.side: float | None = None
        self._faces = faces
        self._outlines: list[np.ndarray] = []  # the faces last found, at reading size
        self._outlines_age = 0  # frames since they were found
        self._window: deque[_Read] = deque()
        self._sum: np.ndarray | None = None
        self._judged = 0  # frames of the window judged already
        self._shape: tuple[int, int] | None = None
        self._count = 0
        self._unmarked_run = 0
        self._searched = False  # in this stretch, at its first full window
        self._seen: list[list[np.ndarray]] = [[]]  # per stretch, each marked frame's correlations at the peak
        self._cuts = CutDetector()
        self._shot = 0
        self._look_now = False  # after a cut the faces are looked for at once

    def push(self, image: np.ndarray) -> list[FrameVerdict]:
        """Read one frame; returns the verdicts of the frames whose windows are now complete."""
        full = luma(image)
        out: list[FrameVerdict] = []
        if (full.shape[0], full.shape[1]) != self._shape:
            out += self.finish()
            self._shape = (full.shape[0], full.shape[1])
        gray = reading_size(full)
        if self._cuts.update(gray):
            self._shot += 1
            self._outlines, self._look_now = [], True
        if self.side is None:
            self.side = float(max(1, tile_side(gray.shape[1], gray.shape[0])))
        weight = self._face_weight(image, gray.shape) if self._faces is not None and image.ndim == 3 else None
        maps = correlations(fold(gray, self.side, weight))
        read = _Read(self._count, gray, weight, maps, strongest(maps), self._shot)
        self._count += 1
        self._window.append(read)
        self._sum = read.strong.copy() if self._sum is None else self._sum + read.strong
        if len(self._window) > WINDOW:
            oldest = self._window.popleft()
            self._sum -= oldest.strong
            self._judged -= 1
        if len(self._window) < WINDOW:
            return out
        if not self._searched or self._unmarked_run >= SEARCH_AGAIN:
            self._searched, self._unmarked_run = True, 0
            if not self._marked_here():
                self._search()
        centre = WINDOW // 2
        reads = list(self._window)
        out += [self._judge(reads, position) for position in range(self._judged, centre + 1)]
        self._judged = centre + 1
        return out

    def _face_weight(self, image: np.ndarray, shape: tuple[int, int]) -> np.ndarray | None:
        """Where a frame is read (uint8, 0 on the faces; `fold`), its faces looked for every FACES_EVERY frames and
        held; None where there are none."""
        assert self._faces is not None
        height, width = shape
        if self._count % FACES_EVERY == 0 or self._look_now:
            self._look_now = False
            small = image if image.shape[:2] == shape else cv2.resize(image, (width, height),
                                                                        interpolation=cv2.INTER_AREA)
            found = self._faces(small)
            if found:
                self._outlines, self._outlines_age = found, 0
        self._outlines_age += 1
        if self._outlines_age > FACES_HELD:
            self._outlines = []
        return face_weight(shape, self._outlines) if self._outlines else None

    def finish(self) -> list[FrameVerdict]:
        """The verdicts of every frame still held back (the end of the video, or of a frame size)."""
        if self._window and not self._searched and not self._marked_here():
            self._search()
        reads = list(self._window)
        out = [self._judge(reads, position) for position in range(self._judged, len(reads))]
        self._window.clear()
        self._sum, self._judged, self._searched, self._unmarked_run = None, 0, False, 0
        self.side = None
        self._outlines = []
        self._cuts = CutDetector()
        if self._seen[-1]:
            self._seen.append([])
        return out

    def _marked_here(self) -> bool:
        """Whether the window, or a shot in it, shows the mark at the side read (else the side is searched)."""
        assert self._sum is not None
        if peak_score(self._sum)[0] >= Z_MARKED:
            return True
        reads = list(self._window)
        shots = {read.shot for read in reads}
        return len(shots) > 1 and any(peak_score(_shot_total(reads, shot))[0] >= Z_MARKED for shot in shots)

    def _judge(self, reads: list[_Read], position: int) -> FrameVerdict:
        """A frame's verdict: the best of its window's score, the scores of the windows of SHORT_WINDOW frames that
        hold it (inside the stretch read so far) and, where its shot is shorter than the window, its shot's score
        (so much of it as is read: a short recast stretch before or after a cut); where marked, its correlations at
        the peak are kept for the payload."""
        assert self._sum is not None
        z, peak = peak_score(self._sum)
        shot = reads[position].shot
        if any(read.shot != shot for read in reads):
            z_shot, peak_shot = peak_score(_shot_total(reads, shot))
            if z_shot > z:
                z, peak = z_shot, peak_shot
        if len(reads) > SHORT_WINDOW:  # the short windows that hold the frame, a quarter of their length apart
            starts = range(max(0, position - SHORT_WINDOW + 1), min(position, len(reads) - SHORT_WINDOW) + 1)
            for first in sorted({*starts[::SHORT_WINDOW // 4], starts[-1]}) if starts else ():
                short = np.sum([read.strong for read in reads[first:first + SHORT_WINDOW]], axis=0)
                z_short, peak_short = peak_score(short)
                if z_short > z:
                    z, peak = z_short, peak_short
        read = reads[position]
        if z >= Z_MARKED:
            self._seen[-1].append(read.maps[:, peak[0], peak[1]].astype(np.float64))
            self._unmarked_run = 0
        else:
            self._unmarked_run += 1
        return FrameVerdict(read.index, z)

    def _search(self) -> None:
        """The tile's side, over every SEARCH_EVERY-th frame of the window: coarse steps of 3 % from a sixth of the
        shorter side to 2.5 times that, then steps of 0.5 % around the best (a side off by 1 % drifts a cell across
        a few tiles). Where the best scores Z_SIDE, the window is read again at it."""
        reads = list(self._window)[::SEARCH_EVERY]
        height, width = reads[-1].gray.shape
        sixth = float(tile_side(width, height))
        if sixth < MIN_SIDE:
            return

        def score(side: float) -> float:
            return peak_score(np.sum([strongest(correlations(fold(read.gray, side, read.weight)))
                                      for read in reads], axis=0))[0]

        coarse = max((sixth * 1.03 ** k for k in range(COARSE_STEPS)), key=score)
        fine = (coarse * (1 + 0.005 * k) for k in range(-FINE_STEPS, FINE_STEPS + 1))
        best, side = max((score(side), side) for side in fine)
        if best < Z_SIDE or (self.side is not None and abs(side / self.side - 1) < 0.005):
            return
        self.side = side
        for read in self._window:
            read.maps = correlations(fold(read.gray, side, read.weight))
            read.strong = strongest(read.maps)
        self._sum = np.sum([read.strong for read in self._window], axis=0)

    def payload(self) -> tuple[Payload | None, int]:
        """The payload read from every marked frame (None when none was, when some pattern was never seen: a stretch
        shorter than PATTERNS x FRAMES_PER_PATTERN frames, or when its check fails), and the number of frames it
        was read from. A frame's correlations at the peak, less their mean over its stretch (what the
        still picture adds to each pattern, the same in every frame), name the pattern it shows (the strongest)
        and that pattern's sign, which is its bit."""
        votes, shown_in = np.zeros(PATTERNS), np.zeros(PATTERNS, int)
        frames = 0
        for stretch in self._seen:
            if not stretch:
                continue
            seen = np.stack(stretch)
            seen -= seen.mean(axis=0)
            shown = np.abs(seen).argmax(axis=1)
            np.add.at(votes, shown, seen[np.arange(len(seen)), shown])
            np.add.at(shown_in, shown, 1)
            frames += len(seen)
        if not frames or not shown_in.all():  # a pattern never seen: a bit not read (PATTERNS x FRAMES_PER_PATTERN)
            return None, frames
        return Payload.of_bits(sum(1 << j for j in range(PATTERNS) if votes[j] > 0)), frames


def _read_all(images: Iterable[np.ndarray], faces: FaceOutlines | None = None
              ) -> tuple[list[FrameVerdict], tuple[Payload | None, int]]:
    """Every frame's verdict, and the payload with the number of frames it was read from."""
    reader = VideoReader(faces)
    verdicts: list[FrameVerdict] = []
    for image in images:
        verdicts += reader.push(image)
    verdicts += reader.finish()
    return verdicts, reader.payload()


def read_frames(images: Iterable[np.ndarray], faces: FaceOutlines | None = None
                ) -> tuple[list[FrameVerdict], Payload | None]:
    """Every frame's verdict and the payload, for pictures at hand (tests, benchmarks); RGB pictures read with a
    face finder leave the faces out (VideoReader)."""
    verdicts, (payload, _) = _read_all(images, faces)
    return verdicts, payload


@dataclass(frozen=True)
class MarkReport:
    """What a video's pictures say: how many frames were read and how many carry the mark, the strongest window's
    score, the payload (None when nothing was marked or its check fails) and the frames it was read from."""

    frames: int
    marked: int
    z_max: float
    z_median_marked: float
    payload: Payload | None
    payload_frames: int

    @property
    def fraction(self) -> float:
        return self.marked / self.frames if self.frames else 0.0

    @property
    def confidence(self) -> float:
        """1 less the chance that a window without the mark scores z_max somewhere, were an unmarked window's map
        Gaussian noise (its TILE_READ^2 offsets and the searched sides taken as independent): a model, so the
        measured unmarked maxima are in docs/provenance.md."""
        tests = TILE_READ * TILE_READ * SIDES_SEARCHED
        chance = min(1.0, tests * 0.5 * math.erfc(self.z_max / math.sqrt(2)))
        return 1.0 - chance

    @property
    def marked_any(self) -> bool:
        return self.marked > 0

    def describe(self) -> dict[str, object]:
        return {"frames": self.frames, "marked": self.marked, "fraction": round(self.fraction, 4),
                "z_max": round(self.z_max, 2), "z_median_marked": round(self.z_median_marked, 2),
                "confidence": round(self.confidence, 6),
                "payload": None if self.payload is None else {"synthetic": self.payload.synthetic,
                                                              "id": self.payload.mark_id},
                "payload_frames": self.payload_frames}


def summarise(verdicts: list[FrameVerdict], payload: tuple[Payload | None, int]) -> MarkReport:
    marked = [v.z for v in verdicts if v.marked]
    return MarkReport(len(verdicts), len(marked), max((v.z for v in verdicts), default=0.0),
                      float(np.median(marked)) if marked else 0.0, payload[0], payload[1])


def read_container(container: av.container.InputContainer, max_frames: int | None = None,
                   faces: FaceOutlines | None = None) -> MarkReport:
    """Read the mark of every frame (or the first `max_frames`) of an open container's first video stream, decoded
    one frame at a time: memory is bounded by the reader's window, whatever the video's length. With a face finder
    the frames are decoded in colour and the faces left out of the reading (VideoReader). Raises av's errors for
    what cannot be decoded."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    kind = "gray" if faces is None else "rgb24"
    pictures = (frame.to_ndarray(format=kind) for frame in container.decode(stream))
    return summarise(*_read_all(itertools.islice(pictures, max_frames), faces))


def read_video(location: str, max_frames: int | None = None, faces: FaceOutlines | None = None) -> MarkReport:
    """`read_container` of a video file or URL. Raises av's errors for what cannot be opened or decoded, ValueError
    for a file without video."""
    with av.open(location, metadata_errors="ignore") as container:
        if not container.streams.video:
            raise ValueError("has no video stream")
        return read_container(container, max_frames, faces)
