"""The one rule for an edit's factor (a direction times this much): a finite number within [-MAX_FACTOR,
MAX_FACTOR]. Bake-time edits (`recast bake --edit NAME=FACTOR`), playback edits (`recast render --edit`) and the
viewer's sliders (the `edit` control message) all check it here. Plain Python, no PyTorch.
"""

from __future__ import annotations

import math

from engines.errors import InputError

MAX_FACTOR = 20.0


class EditError(InputError):
    """A factor that is not a number, or out of range; the message says which edit and why."""


def edit_factor(value: object, what: str = "factor") -> float:
    """``value`` as a float factor, or EditError naming ``what``. Text is parsed (a command line's NAME=FACTOR);
    booleans are not numbers here."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise EditError(f"{what}: not a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or abs(value) > MAX_FACTOR:
        raise EditError(f"{what}: a number in [-{MAX_FACTOR:g}, {MAX_FACTOR:g}]")
    return float(value)
