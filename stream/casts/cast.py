"""A cast: the portrait a recaster puts on screen, registered as ``synthetic`` (generated) or ``consented``
(a real person who agreed, or a public-domain portrait), with a note saying where it is from; the built-in
casts; reading a portrait file with its limits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from engines.errors import InputError

CastKind = Literal["synthetic", "consented"]
MAX_CAST_PIXELS = 40_000_000
MAX_CAST_SIDE = 6000


class CastError(InputError):
    """A cast image that cannot be used (no face, unreadable); the message names the image."""


class CastImageError(InputError):
    """An image file that cannot be used as a cast; the message names the file."""


@dataclass(frozen=True)
class Prepared:
    """A cast's face checked and made ready once, by the landmark model of one detector (the warp maps the cast's
    points onto the actor's, so both come from the same model): the portrait's 68 points, the aligned texture
    (RGBA; alpha 0 where the portrait's hair was), its 68 points in texture pixels, and with the mediapipe
    detector the portrait's 468-point mesh (the dense warp)."""

    detector: str
    landmarks: np.ndarray  # [68,2] portrait pixels
    rgba: np.ndarray  # [N,N,4] uint8
    points: np.ndarray  # [68,2] texture pixels
    mesh: np.ndarray | None = None  # [468,2] portrait pixels: the dense mesh (the mediapipe detector's model)
    current: bool = True  # False: the texture was made by an older preparation, and is made again from the portrait


@dataclass(frozen=True)
class Cast:
    cast_id: str
    kind: CastKind
    source: str  # where the portrait comes from (a note, or the file given with --cast)
    image: np.ndarray  # [H,W,3] uint8 RGB
    prepared: Prepared | None = None  # once checked and prepared (a registered cast)
    fomm: Path | None = None  # the FOMM checkpoint a registered cast plays with in `recast serve`

    def describe(self) -> dict[str, str]:
        digest = hashlib.sha256(self.image.tobytes()).hexdigest()[:16]
        return {"id": self.cast_id, "kind": self.kind, "source": self.source, "pixels_sha256": digest}


def read_image(path: str | Path) -> np.ndarray:
    """An RGB uint8 image from a file, or :class:`CastImageError` naming the file and what is wrong with it: not
    an image, too large, more than one frame (an animated GIF), no colour (greyscale), CMYK (its colours need a
    profile to become RGB), or transparent pixels (what would show through them is unknown)."""
    path = Path(path)
    if not path.is_file():
        raise CastImageError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_CAST_PIXELS or max(im.size) > MAX_CAST_SIDE:
                raise CastImageError(f"{path}: image too large ({im.width}x{im.height}; at most {MAX_CAST_SIDE} px "
                                     "on a side): scale it down")
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                raise CastImageError(f"{path}: an animated image ({frames} frames): give one still portrait")
            if im.mode in ("L", "LA", "1", "I", "I;16", "F"):
                raise CastImageError(f"{path}: a greyscale image: a cast needs colour")
            if im.mode == "CMYK":
                raise CastImageError(f"{path}: a CMYK image: save it as RGB (its colours need the print profile)")
            if im.mode in ("RGBA", "PA", "La") or (im.mode == "P" and "transparency" in im.info):
                alpha = np.array(im.convert("RGBA"))[..., 3]
                if (alpha < 255).any():
                    raise CastImageError(f"{path}: has transparent pixels ({(alpha < 255).mean():.0%}): flatten it "
                                         "onto its background first")
            image = np.array(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise CastImageError(f"{path}: not a readable image ({exc})") from exc
    if np.abs(image.astype(np.int16) - image[..., :1]).max() <= 2:
        raise CastImageError(f"{path}: a greyscale image (stored as RGB): a cast needs colour")
    return image


def cast_from_file(path: str | Path, kind: CastKind = "consented") -> Cast:
    """A cast from an image given by the operator (``--cast``): the operator answers for consent."""
    path = Path(path)
    return Cast(path.stem, kind, f"operator-supplied file {path.name}", read_image(path))


def hopper_cast() -> Cast:
    """Grace Hopper's public-domain U.S. Navy portrait, shipped inside matplotlib as sample data."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        raise CastImageError(f"{path}: matplotlib's sample portrait is missing")
    return Cast("hopper", "consented", "public-domain U.S. Navy portrait of Grace Hopper (matplotlib sample data)",
                read_image(path))


def collins_cast() -> Cast:
    """Eileen Collins's public-domain NASA portrait, shipped inside scikit-image as sample data."""
    import skimage

    path = Path(skimage.__file__).parent / "data" / "astronaut.png"
    if not path.is_file():
        raise CastImageError(f"{path}: scikit-image's sample portrait is missing")
    return Cast("collins", "consented",
                "public-domain NASA portrait of astronaut Eileen Collins (scikit-image sample data)", read_image(path))


def default_casts(demo: bool = False) -> list[Cast]:
    """The two built-in casts, the default first: Eileen Collins, or Grace Hopper for the sample title (which
    animates Collins's portrait). Hopper's portrait wears glasses, and a warp puts a cast's glasses, with the
    glare on their lenses, on every actor: on anyone else's video Collins goes first."""
    return [hopper_cast(), collins_cast()] if demo else [collins_cast(), hopper_cast()]
