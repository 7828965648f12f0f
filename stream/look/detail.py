"""The shot's detail on a recast face: a recast face is smoother than the picture around it (a portrait of smooth
skin, resampled twice). Its fine detail is brought to the actor's level: the cast's own detail is sharpened (up
to twice), and in the plain skin (cheeks, forehead, chin; not eyes, brows, nose or lips, which are the cast's)
the actor's fine texture makes up the rest, so the face has the grain and focus of the shot it sits in."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stream.look.features import features_mask
from stream.look.paste import crispness

SOFTEN_PROBES = (0.5, 1.0)  # px: the blurs whose crispness is measured to pick the one that softens a portrait
SOFTEN_MOST = 2.5  # px: the most a portrait is blurred
SOFTEN_LEAST = 0.02  # px: a softening under this is left out
# the crop, the paste and the encoder's conversion keep `kept` of the shot's crispness (FaceCrop.kept): what they lose
# is made up when the cast's detail is raised, for a share kept down to KEPT_LEAST, and what the conversion's rounding
# adds is left room for, up to KEPT_MOST. d0's textured skin keeps 0.80 (made up, the scorer's sharp is 0.85 rather
# than 0.77); s18's keeps 1.02 and d20's smooth one 1.04
KEPT_LEAST, KEPT_MOST = 0.7, 1.25
SOFTEN_EVERY, SOFTEN_STEADY = 4, 0.5  # a track's blur is measured every 4th frame and averaged (half the new one)


@dataclass
class Softening:
    """A track's softening of a portrait crisper than its shot: the blur, averaged, and the frames softened."""

    sigma: float | None = None
    age: int = 0


def _detail(gray: np.ndarray, sigma: float) -> np.ndarray:
    return gray - cv2.GaussianBlur(gray, (0, 0), sigma)


def match_detail(face: np.ndarray, actor: np.ndarray, landmarks: np.ndarray, mask: np.ndarray,
                 max_sharpen: float = 2.0, memory: Softening | None = None, kept: float = 1.0) -> np.ndarray:
    """`face` with fine detail at the actor's level inside `mask` (uint8 [N,N,3] each). The detail is the
    luminance above a Gaussian of about a pixel at 256 px (scaled with the crop); it is added to all three
    channels alike, so colour stays the cast's. How far the cast's own detail is raised is read at the pixel scale
    (a 3x3 Laplacian), the crispness of lashes, brows and lips' edges that the eye reads first: matched on the
    wider band, d0's recast stays visibly softer than the shot (sharp 0.70, against 0.75 at the pixel scale). `kept`
    is the share of the shot's crispness the crop, the paste and the encoder's conversion keep: the face is brought
    to the actor's crispness over `kept` (see KEPT_LEAST), so that it is the shot's once pasted and encoded. A face
    crisper than that is first blurred down to it (`_soften_sigma`), however slightly: a sharp portrait's grain,
    pores and creases on a soft or blurred shot read as pasted on (s12 on s18: 1.77 times the shot's crispness,
    Cruise on d20 1.83). `memory` (one per track) keeps the blur, measured again every SOFTEN_EVERY frames. A softer
    face has its own detail raised."""
    n = face.shape[0]
    sigma = max(0.8, n / 320)
    inside = mask > 0.5
    if inside.sum() < 64:
        return face
    gray_face = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gray_actor = cv2.cvtColor(actor, cv2.COLOR_RGB2GRAY).astype(np.float32)
    crisp_ours, crisp_theirs = crispness(gray_face, inside), crispness(gray_actor, inside)
    # the crispness the face is brought to: the actor's, over what the crop, the paste and the conversion keep of it
    aim = crisp_theirs / float(np.clip(kept, KEPT_LEAST, KEPT_MOST))
    soften = None  # the luminance the softening takes off (or adds back), like the detail: colour stays the cast's
    if aim < crisp_ours:  # a portrait crisper than the shot (its grain, pores, creases) is softened to it
        sharpen = 0.0
        if memory is not None and memory.sigma is not None and memory.age % SOFTEN_EVERY:
            blur = memory.sigma  # the focus of a shot changes slowly; measuring it costs 0.5-1 ms
        else:
            blur = _soften_sigma(gray_face, inside, crisp_ours, aim)
            if memory is not None:
                if memory.sigma is not None:
                    blur = memory.sigma + SOFTEN_STEADY * (blur - memory.sigma)
                memory.sigma = blur
        if memory is not None:
            memory.age += 1
        if blur >= SOFTEN_LEAST:  # in floats: a slight softening is finer than a grey level
            softened = _blurred(gray_face, blur)
            soften, gray_face = softened - gray_face, softened
    else:  # the cast's own detail raised
        sharpen = float(np.clip(aim / max(crisp_ours, 1e-3) - 1.0, 0.0, max_sharpen))
    ours, theirs = _detail(gray_face, sigma), _detail(gray_actor, sigma)  # the face's detail once it is softened
    e_ours, e_theirs = float(np.abs(ours[inside]).mean()), float(np.abs(theirs[inside]).mean())
    if e_theirs <= e_ours or e_theirs < 1e-3:
        return face if soften is None else _added(face, soften)
    left = max(0.0, 1.0 - ((1.0 + sharpen) * e_ours / e_theirs) ** 2)  # what sharpening could not reach
    skin = (1.0 - features_mask(landmarks, n)) * mask
    # the cast's detail raised only well inside the face: at the feathered border (and where the portrait's hair was
    # painted over) a raised edge would show as a bright or dark seam
    core = np.clip(mask * 2.0 - 1.0, 0.0, 1.0)
    add = sharpen * ours * core + np.sqrt(left) * skin * theirs
    return _added(face, add if soften is None else add + soften)


def _added(face: np.ndarray, luminance: np.ndarray) -> np.ndarray:
    """`face` (uint8 RGB) with `luminance` (float, [N,N]) added to each channel, rounded and saturated."""
    return np.asarray(cv2.add(face, cv2.merge([luminance, luminance, luminance]), dtype=cv2.CV_8U))


def _blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    """`image` blurred by a Gaussian of `sigma` px; under the first probe's blur, that blur mixed in by the share
    sigma / probe (a Gaussian kernel under about 0.4 px is nearly the identity, so a portrait a few per cent crisper
    than its shot would stay as crisp), which follows the crispness measured between 0 and the probe."""
    first = SOFTEN_PROBES[0]
    blurred = np.asarray(cv2.GaussianBlur(image, (0, 0), max(sigma, first)))
    if sigma >= first:
        return blurred
    return np.asarray(cv2.addWeighted(image, 1.0 - sigma / first, blurred, sigma / first, 0.0))


def _soften_sigma(gray: np.ndarray, inside: np.ndarray, crisp: float, target: float) -> float:
    """The Gaussian blur (px) that brings `gray`'s crispness inside (`crisp`) down to `target`. The crispness is
    measured after two blurs (SOFTEN_PROBES), each rounded to levels as the face is drawn (on a smooth face the
    rounding's own noise reads as crispness: a blur that reached d20's aim in floats left the drawn face 11 % above
    it), and read between them, linearly; past the larger one it is taken to fall as 1 / (1 + a sigma^2), a fitted
    to it (on four portraits' textures that model was within 0.2 of the measured crispness, 1-5, from 0.6 to 1.7
    px). At most SOFTEN_MOST."""
    sigmas, crisps = [0.0], [crisp]
    for probe in SOFTEN_PROBES:
        sigmas.append(probe)
        crisps.append(crispness(np.rint(_blurred(gray, probe)), inside))  # as it is drawn: in levels
        if crisps[-1] <= target:
            return float(np.interp(target, crisps[::-1], sigmas[::-1]))
    a = max(crisp / max(crisps[-1], 1e-6) - 1.0, 1e-3) / sigmas[-1] ** 2
    return min(float(np.sqrt(max(crisp / max(target, 1e-6) - 1.0, 0.0) / a)), SOFTEN_MOST)
