"""The actor's light on the cast's skin: the smooth shading ratio between the actor's face and the cast's, moved
across at low resolution."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stream.look.features import features_mask
from stream.look.masks import face_mask

LIGHT_WORK = 64  # px: the light is measured and moved at this size (it is smooth by definition)
LIGHT_SIGMA = 0.07  # of the crop: the scale of shading moved from the actor (a cheek, a side of the nose)
LIGHT_STEADY = 0.5  # the share of a new light measurement taken each frame
LIGHT_RANGE = (0.5, 2.0)  # the most a channel of the cast's skin is scaled at a place


@dataclass
class Lighting:
    """A track's light: the ratio field of the actor's light over the cast's, averaged over frames."""

    ratio: np.ndarray | None = None  # [LIGHT_WORK,LIGHT_WORK,3] float


def transfer_light(face: np.ndarray, actor: np.ndarray, landmarks: np.ndarray, mask: np.ndarray,
                   memory: Lighting | None = None) -> np.ndarray:
    """`face` lit and coloured as the actor's skin is, place by place: per channel, the ratio of the actor's
    low-frequency colour to the face's, each measured over the plain skin only (not eyes, brows, nostrils or lips,
    whose darkness is not light: normalised convolution fills the skin's values in across them), multiplied into
    the face (light and skin tone scale what a surface reflects, so the cast's features keep their contrast).
    Where light falls from one side, or a cheek is in shadow or flushed, the cast's face is too, and its border
    meets the actor's skin at the same colour. `memory` (one per track) averages the ratio over frames."""
    n = face.shape[0]
    scale = LIGHT_WORK / n
    small = [cv2.resize(x, (LIGHT_WORK, LIGHT_WORK), interpolation=cv2.INTER_AREA).astype(np.float32)
             for x in (face, actor)]
    # plain skin only, strictly: a feature's darkness taken for shade would brighten the cast around its eyes.
    # The actor's skin is all of the actor's face; the cast's is where its face is pasted (not where the
    # portrait's hair was), so at the paste's border the cast meets the actor's own shade there
    plain = features_mask(landmarks * scale, LIGHT_WORK) < 0.1
    small_mask = cv2.resize(mask, (LIGHT_WORK, LIGHT_WORK), interpolation=cv2.INTER_AREA)
    inside = small_mask > 0.5
    cast_skin = (inside & plain).astype(np.float32)
    actor_skin = ((face_mask(landmarks * scale, LIGHT_WORK) > 0.5) & plain).astype(np.float32)
    if float(cast_skin.sum()) < max(16.0, 0.1 * float(inside.sum())):  # too little plain skin to measure
        return face
    sigma = LIGHT_SIGMA * LIGHT_WORK
    weight, actor_weight = (cv2.GaussianBlur(x, (0, 0), sigma) + 1e-4 for x in (cast_skin, actor_skin))
    ours = cv2.GaussianBlur(small[0] * cast_skin[..., None], (0, 0), sigma) / weight[..., None]
    theirs = cv2.GaussianBlur(small[1] * actor_skin[..., None], (0, 0), sigma) / actor_weight[..., None]
    # only where both skins were measured near enough: further off (a wide open mouth) the change fades out
    near = np.minimum(weight / max(float(weight.max()), 1e-4), actor_weight / max(float(actor_weight.max()), 1e-4))
    reach = np.clip(near * 2.0, 0.0, 1.0)[..., None]
    # all of the face, its feathered border too; nothing a work pixel or more outside it (made small, then scaled up:
    # a pass over the whole crop cost more than the rest together)
    pasted = cv2.dilate((small_mask > 0).astype(np.uint8), np.ones((3, 3), np.uint8))[..., None]
    ratio = np.clip((theirs + 1.0) / (ours + 1.0), *LIGHT_RANGE)
    if memory is not None:  # one per track: the light of a face changes slowly, its measurement is noisy
        if memory.ratio is not None:
            ratio = memory.ratio + LIGHT_STEADY * (ratio - memory.ratio)
        memory.ratio = ratio
    ratio = np.where(pasted > 0, 1.0 + (ratio - 1.0) * reach, 1.0)
    full = cv2.resize(ratio.astype(np.float32), (n, n), interpolation=cv2.INTER_LINEAR)
    return np.asarray(cv2.multiply(face, full, dtype=cv2.CV_8U))  # rounded, saturated
