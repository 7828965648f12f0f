"""InterFaceGAN latent directions: load STIT `.npy` and e4e/PTI `.pt` files, apply them as each project does, learn
new ones from two labelled sets of latents.

Two conventions (`../shared/reference/checkpoint-formats.md` section 4):
- STIT (`LatentEditor`): keep row 0 of the (18,512) float64 array as (1,512) and add `(factor / 2) * direction` to
  every W+ layer of the pivots; the float64 sum is cast to float32 before synthesis.
- InterFaceGAN as in e4e/PTI (`apply_interfacegan`): `latent + factor * direction`, no halving; a (1,512) direction
  broadcasts over the 18 layers, a (1,18,512) one adds per layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from engines.errors import InputError

if TYPE_CHECKING:  # PyTorch is loaded only to read a .pt direction or to apply one
    import torch

Convention = Literal["stit", "interfacegan"]
SUFFIXES = (".npy", ".pt")


class DirectionError(InputError):
    """A direction file that cannot be used; the message names the file."""


@dataclass(frozen=True)
class Direction:
    name: str
    vector: np.ndarray  # as stored: (18,512) float64 (STIT), (1,512) or (1,18,512) float32 (e4e/PTI)
    path: Path
    convention: Convention

    @property
    def per_layer(self) -> bool:
        """True when the layers differ (a (1,18,512) direction whose rows are not all equal)."""
        rows = self.vector.reshape(-1, self.vector.shape[-1])
        return rows.shape[0] > 1 and not np.all(rows == rows[0])

    @property
    def norm(self) -> float:
        return float(np.linalg.norm(self.vector.reshape(-1, self.vector.shape[-1])[0]))

    def describe(self) -> str:
        return (f"{self.name:<22} {self.convention:<12} {self.vector.dtype!s:<8} "
                f"{tuple(self.vector.shape)!s:<14} |row0| {self.norm:.4f}  {self.path}")


def load_direction(path: str | Path, convention: Convention | None = None) -> Direction:
    """Read a direction file; the convention defaults to the file's origin (.npy STIT, .pt InterFaceGAN)."""
    path = Path(path)
    if path.suffix == ".npy":
        try:
            vector = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise DirectionError(f"{path}: not a plain .npy array ({err})") from err
        convention = convention or "stit"
    elif path.suffix == ".pt":
        import torch

        from engines.official import CheckpointError, torch_load_weights

        try:
            data = torch_load_weights(path)
        except CheckpointError as err:
            raise DirectionError(str(err)) from err
        if not isinstance(data, torch.Tensor):
            raise DirectionError(f"{path}: holds a {type(data).__name__}, not a tensor")
        vector = data.detach().cpu().numpy()
        convention = convention or "interfacegan"
    else:
        raise DirectionError(f"{path}: unknown direction format (.npy or .pt)")
    if vector.dtype.kind != "f" or vector.shape[-1] != 512 or vector.ndim not in (1, 2, 3) or vector.size % 512:
        raise DirectionError(f"{path}: expected float (…,512) data, got {vector.dtype} {vector.shape}")
    if not np.all(np.isfinite(vector)):
        raise DirectionError(f"{path}: contains NaN or infinity")
    if vector.ndim == 1:
        vector = vector[None]
    return Direction(path.stem, vector, path, convention)


def list_directions(folder: str | Path, skipped: list[str] | None = None) -> list[Direction]:
    """Every direction file in a folder; with `skipped`, files that are not directions are noted there instead of
    failing the listing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DirectionError(f"{folder}: not a folder")
    found = []
    for path in sorted(folder.iterdir()):
        if path.suffix not in SUFFIXES:
            continue
        try:
            found.append(load_direction(path))
        except DirectionError as err:
            if skipped is None:
                raise
            skipped.append(str(err))
    return found


def apply_stit(pivots: torch.Tensor, direction: Direction, factor: float) -> torch.Tensor:
    """STIT `LatentEditor`: pivots [N,L,512] + (factor/2) * row 0 of the direction (float64), cast to float32."""
    import torch

    d = torch.from_numpy(np.asarray(direction.vector).reshape(-1, 512))[0, None]  # (1,512), dtype as stored
    return (pivots + (factor / 2) * d.to(pivots.device)).to(torch.float32)


def apply_interfacegan(latents: torch.Tensor, direction: Direction, factor: float) -> torch.Tensor:
    """e4e/PTI `apply_interfacegan`: latents [N,L,512] + factor * direction ((1,512) or (1,L,512))."""
    import torch

    d = torch.from_numpy(np.asarray(direction.vector)).to(latents.device)
    return (latents + factor * d).to(torch.float32)


def fits(direction: Direction, styles: int) -> bool:
    """Whether a direction applies to W+ codes of ``styles`` rows: STIT's use row 0 for every style; InterFaceGAN's
    are one row, or one per style."""
    rows = direction.vector.reshape(-1, 512).shape[0]
    return direction.convention == "stit" or rows in (1, styles)


def apply_direction(
    latents: torch.Tensor, direction: Direction, factor: float, convention: Convention | None = None
) -> torch.Tensor:
    if (convention or direction.convention) == "stit":
        return apply_stit(latents, direction, factor)
    return apply_interfacegan(latents, direction, factor)


@dataclass
class LearnedDirection:
    normal: np.ndarray  # (L,512) float64, unit norm over all L*512 entries
    bias: float
    train_accuracy: float
    balanced_accuracy: float
    positives: int
    negatives: int


def learn_direction(
    positive: np.ndarray, negative: np.ndarray, l2: float = 1.0, max_iter: int = 500
) -> LearnedDirection:
    """Class-balanced L2 logistic regression on flattened W+ latents ([P,L,512] vs [Q,L,512]).

    Each class carries half of the loss whatever its size; the normal of the separating hyperplane, reshaped to
    (L,512) and scaled to unit norm, is the edit direction (pointing towards the positive class).
    """
    from scipy.optimize import minimize

    if positive.ndim != 3 or negative.ndim != 3 or positive.shape[1:] != negative.shape[1:]:
        raise ValueError(f"latents must be [N,L,512] with equal L: {positive.shape} vs {negative.shape}")
    if len(positive) < 2 or len(negative) < 2:
        raise ValueError(f"need at least two examples per class (got {len(positive)} and {len(negative)})")
    layers = positive.shape[1:]
    x = np.concatenate([positive, negative]).reshape(len(positive) + len(negative), -1).astype(np.float64)
    y = np.concatenate([np.ones(len(positive)), -np.ones(len(negative))])
    weights = np.where(y > 0, 0.5 / len(positive), 0.5 / len(negative))
    mean = x.mean(axis=0)
    xc = x - mean

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        beta, b = params[:-1], params[-1]
        margin = y * (xc @ beta + b)
        value = float(np.sum(weights * np.logaddexp(0, -margin)) + 0.5 * l2 * beta @ beta / len(y))
        sig = 0.5 * (1 - np.tanh(margin / 2))  # sigmoid(-margin), stable
        g = -weights * y * sig
        grad = np.concatenate([xc.T @ g + l2 * beta / len(y), [g.sum()]])
        return value, grad

    result = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    beta, b = result.x[:-1], float(result.x[-1])
    norm = float(np.linalg.norm(beta))
    if norm == 0:
        raise ValueError("the two sets cannot be separated at all (zero normal)")
    pred = np.sign(xc @ beta + b)
    pos_acc = float(np.mean(pred[y > 0] > 0))
    neg_acc = float(np.mean(pred[y < 0] < 0))
    return LearnedDirection(
        normal=(beta / norm).reshape(layers),
        bias=(b - float(mean @ beta)) / norm,
        train_accuracy=float(np.mean(pred == y)),
        balanced_accuracy=(pos_acc + neg_acc) / 2,
        positives=len(positive),
        negatives=len(negative),
    )


def save_direction(path: str | Path, normal: np.ndarray) -> Path:
    """Write a (L,512) float64 .npy, the STIT file layout."""
    path = Path(path)
    if path.suffix != ".npy":
        raise DirectionError(f"{path}: directions are written as .npy")
    np.save(path, np.ascontiguousarray(normal, dtype=np.float64), allow_pickle=False)
    return path
