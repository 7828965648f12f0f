"""A cast portrait cleaned once, when the cast is prepared: its hair over the forehead, temples and cheeks' sides (a
fringe, strands) replaced by its own skin, and the shade that hair casts lifted, so no strand of the portrait's
hair lands on the actor's face."""

from __future__ import annotations

import cv2
import numpy as np

from stream.look.masks import disc, polygon_mask

# of the eye distance: how far the hair left out is grown, and its edge feathered. Next to a portrait's hair its skin
# is rarely clean (a strand's fringe, its shadow, the inpaint's smear). Grown 0.02, a pale patch above d0's brow and
# a dark streak at d20's temple stay with s42; at 0.05 they mostly go; at 0.08 wholly, but with the default cast
# (Collins, whose fringe covers her forehead down to the brows) so much of the actor's forehead shows that on d0 the
# recast is nearer the actor in 15 % of frames (cast_closer 0.85; 0.96 at 0.05)
HAIR_GROW, HAIR_FEATHER = 0.05, 0.04
OUTSIDE_REACH = 0.06  # of the face's width: how far outside its outline a portrait's hair is looked for
STRAND_BAR, STRAND_FLOOR = 4.0, 6.0  # a strand's black-hat: over 4x the cheeks' typical one and over 6 levels
SKIN_SPREADS = 3.5  # skin is within this many robust spreads of the cheeks' colour (per Lab channel, combined)
# a strand hanging from the hair, thinned to a few hairs over the skin, is hair down to this distance from the
# cheeks' colour (SKIN_SPREADS elsewhere), and down to this share of the black-hat's bar: s42's faint strands by
# the eye
HAIR_WEAK = 2.5
HAIR_FILL = 0.12  # of the eye distance: the reach of the skin painted over the hair left out


def _filled(outline: np.ndarray, n: int) -> np.ndarray:
    """Bool mask [n,n] inside a polygon (pixels, not necessarily convex)."""
    inside = np.zeros((n, n), np.uint8)
    cv2.fillPoly(inside, [np.round(outline * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return inside > 0


def clean_texture(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """A cast texture (uint8 [N,N,3], its 68 landmarks in pixels) with the hair over its forehead, temples and the
    sides of its cheeks (long hair falling over the face, and the faint strands hanging from it) painted over with
    the skin around it; where it was (grown by HAIR_GROW, feathered) 0 in the returned alpha [N,N] float32, 1
    elsewhere, so that the actor's own skin shows there rather than a smear; and the share of that band that was
    hair. A ring just outside the face's outline is looked at too: hair and background there are left out the same
    way. Skin is what matches the colour of the cheeks' middle (per Lab channel, within SKIN_SPREADS robust
    spreads) and is not a thin dark line (a strand); the brows are kept."""
    n = image.shape[0]
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    lm = landmarks
    # the middle of each cheek, well inside the face (a portrait's hair often falls over the cheeks' sides)
    cheeks = (polygon_mask(np.stack([lm[41], lm[31], lm[48], (lm[3] + lm[31]) / 2, (lm[1] + lm[41]) / 2]), n) > 0.5) | (
        polygon_mask(np.stack([lm[46], lm[35], lm[54], (lm[13] + lm[35]) / 2, (lm[15] + lm[46]) / 2]), n) > 0.5)
    opaque = np.ones((n, n), np.float32)
    if cheeks.sum() < 50:
        return image, opaque, 0.0
    skin = lab[cheeks]
    mean = np.median(skin, axis=0)  # robust: a strand or a shadow in the sample does not move them
    spread = np.maximum(1.4826 * np.median(np.abs(skin - mean), axis=0), (4.0, 2.0, 2.0))
    lift = (landmarks[36:48].mean(axis=0) - landmarks[8]) * 0.25  # as the face mask lifts the brows
    top = landmarks[17:27] + lift
    # the forehead (the band from the brows' top edge up to the lifted brows, following their arch: its convex
    # hull also took in the brows under the arch, and a portrait's thick brows, s12's, were left out as hair) and
    # each temple (from the face's side at eye level up)
    band = (_filled(np.concatenate([landmarks[17:27], top[::-1]]), n)
            | (polygon_mask(np.stack([landmarks[0], landmarks[17], top[0]]), n) > 0.5)
            | (polygon_mask(np.stack([landmarks[16], landmarks[26], top[9]]), n) > 0.5))
    # the cheeks' sides: from the jaw line a quarter of the way in towards the nose, ear to jaw corner
    inward = landmarks[0:17] + (landmarks[30] - landmarks[0:17]) * 0.25
    for side in (slice(0, 7), slice(10, 17)):
        band |= _filled(np.concatenate([landmarks[side], inward[side][::-1]]), n)
    # and just outside the face's outline, where the paste's border can reach (the dense warp follows the mesh's
    # oval, which runs past the 68 points' jaw on many portraits): whatever is not skin there is hair or background
    hull = polygon_mask(np.concatenate([landmarks[0:17], top[::-1]]), n) > 0.5
    reach = max(3, round(OUTSIDE_REACH * float(np.linalg.norm(landmarks[0] - landmarks[16]))))
    grown = cv2.dilate(hull.astype(np.uint8), disc(reach))
    band |= (grown > 0) & ~hull
    for eye in (landmarks[36:42], landmarks[42:48]):  # never an eye
        centre = eye.mean(axis=0)
        band &= polygon_mask(centre + (eye - centre) * 1.8, n) < 0.5
    iod = float(np.linalg.norm(landmarks[36:42].mean(0) - landmarks[42:48].mean(0)))
    brows = np.zeros((n, n), np.uint8)
    for brow in (landmarks[17:22], landmarks[22:27]):
        cv2.polylines(brows, [np.round(brow).astype(np.int32)], False, 1, max(2, round(0.25 * iod)))
    distance = np.sqrt((((lab - mean) / spread) ** 2).sum(axis=2))
    # thin strands nearly of skin colour still show as dark lines: a black-hat of the lightness finds them
    lines = cv2.morphologyEx(lab[..., 0], cv2.MORPH_BLACKHAT, disc(max(3, round(0.12 * iod)) // 2))
    # a strand is a line darker than the cheeks' own fine texture gives: measured on the cheeks' black-hat (the
    # lightness's spread, which it was measured on before, is mostly the portrait's shading and let faint strands
    # over a forehead through)
    texture = lines[cheeks]
    typical = float(np.median(texture))
    bar = max(STRAND_FLOOR, STRAND_BAR * (typical + 1.4826 * float(np.median(np.abs(texture - typical)))))
    searched = band & (brows == 0)
    hair = (((distance > SKIN_SPREADS) | (lines > bar)) & searched).astype(np.uint8)
    hair = cv2.morphologyEx(hair, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    seeds = (hair > 0) & hull
    if seeds.any():  # and the faint strands that hang from the hair over the face (weak, where connected to it)
        weak = ((distance > HAIR_WEAK) | (lines > bar * HAIR_WEAK / SKIN_SPREADS)) & searched & hull
        weak = (cv2.morphologyEx(weak.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0) | seeds
        count, labels = cv2.connectedComponents(weak.astype(np.uint8), connectivity=8)
        keep = np.zeros(count, bool)
        keep[np.unique(labels[seeds])] = True
        keep[0] = False
        hair = np.maximum(hair, keep[labels].astype(np.uint8))
    share = float(hair.sum()) / max(float(band.sum()), 1.0)
    if not hair.any():
        return image, opaque, 0.0
    grow = max(2, round(HAIR_GROW * iod))
    hair = cv2.dilate(hair, disc(grow))
    image = _lift_hair_shadow(image, lab, hair, hull, landmarks, brows, iod, mean, spread)
    feather = max(1.0, HAIR_FEATHER * iod)
    alpha = np.clip(1.0 - cv2.GaussianBlur(hair.astype(np.float32), (0, 0), feather) * 1.5, 0.0, 1.0)
    # painted with the skin around it, smoothly (normalised convolution of the skin left; far from any skin, as in a
    # thumbnail's corner, the skin's typical colour): at the alpha's feathered edge only skin shows. Inpainted from
    # the hair's edge (Telea), the hair-shadowed skin there was drawn in as a grey smear, which showed as a pale
    # band down s18's cheek with s42
    skin_left = (hull & (hair == 0) & (distance <= SKIN_SPREADS)).astype(np.float32)
    reach_fill, typical_skin = max(2.0, HAIR_FILL * iod), np.median(image[cheeks].astype(np.float32), axis=0)
    fill = cv2.GaussianBlur(image.astype(np.float32) * skin_left[..., None], (0, 0), reach_fill) + 0.02 * typical_skin
    fill /= cv2.GaussianBlur(skin_left, (0, 0), reach_fill)[..., None] + 0.02
    painted = np.where(hair[..., None] > 0, np.clip(fill, 0, 255).astype(np.uint8), image)
    return painted, alpha.astype(np.float32), share


SHADOW_REACH = 0.35  # of the eye distance: how far from a portrait's hair its shadow on the skin is lifted
SHADOW_SCALE = 0.12  # of the eye distance: the scale at which the shadow's darkness is measured
SHADOW_FLOOR = 0.35  # of the cheeks' lightness: darker is hair, a brow or a moustache, never shaded skin


def _lift_hair_shadow(image: np.ndarray, lab: np.ndarray, hair: np.ndarray, hull: np.ndarray, landmarks: np.ndarray,
                      brows: np.ndarray, iod: float, skin: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """`image` with the skin beside the hair left out lightened to the cheeks' lightness, where it is darker: hair
    shades the skin it falls beside (s42's temple beside her eye is 74-120 in lightness against 180 on her
    cheeks), and stretched over an actor's brighter temple that shade reads as a grey wedge. Shaded skin is skin
    by its colour (a, b within SKIN_SPREADS of the cheeks'), whatever its lightness down to SHADOW_FLOOR, and not
    a brow; the shade is measured smoothly over it (SHADOW_SCALE), and what it lacks is added to the lightness of
    all that is kept there, smoothly, so the skin's grain, a lash or a strand of moustache keep their contrast and
    no patch of darker pixels is left behind. The eyes' openings and the lips are left as they are."""
    n = image.shape[0]
    chroma = np.sqrt((((lab[..., 1:] - skin[1:]) / spread[1:]) ** 2).sum(axis=2))
    shaded_skin = (hull & (hair == 0) & (brows == 0) & (chroma <= SKIN_SPREADS)
                   & (lab[..., 0] >= SHADOW_FLOOR * skin[0])).astype(np.float32)
    # all that is kept near the hair, the brows' ends too (left darker than the lightened skin, they framed the
    # brows in a dark band; with them lightened Collins's d_cast on d0 was 0.48 against 0.51)
    kept = (hull & (hair == 0)).astype(np.float32)
    near = cv2.GaussianBlur(hair.astype(np.float32), (0, 0), max(1.0, SHADOW_REACH * iod / 2))
    near = np.clip(near * 4.0, 0.0, 1.0) * kept
    for part, grow in ((landmarks[36:42], 1.3), (landmarks[42:48], 1.3), (landmarks[48:60], 1.15)):
        centre = part.mean(axis=0)
        near *= 1.0 - polygon_mask(centre + (part - centre) * grow, n, blur=max(1.0, 0.05 * iod))
    if float(near.max()) < 0.05:
        return image
    sigma = max(1.0, SHADOW_SCALE * iod)
    weight = cv2.GaussianBlur(shaded_skin, (0, 0), sigma)[..., None] + 1e-4
    local = cv2.GaussianBlur(lab * shaded_skin[..., None], (0, 0), sigma) / weight
    deficit = np.clip(skin[0] - local[..., 0], 0.0, None)
    # never past the skin's own lightness (and its spread): skin beside a dark lash, lit already, is not lightened.
    # Added, not multiplied: divided out, the shade's grain (on an old photograph, its noise) came back coloured
    rise = np.minimum(deficit * near, np.clip(skin[0] + spread[0] - lab[..., 0], 0.0, None))
    # a shade is darker and, lightened alone, more saturated than the skin: its colour goes to the skin's as far
    # as its darkness is lifted
    share = (near * np.clip(deficit / max(0.5 * skin[0], 1.0), 0.0, 1.0))[..., None]
    shift = np.concatenate([rise[..., None], (skin[1:] - local[..., 1:]) * share], axis=2)
    lifted = cv2.cvtColor(np.clip(lab + shift, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    return np.where((near > 0)[..., None], lifted, image)  # elsewhere not even 8-bit Lab's round trip
