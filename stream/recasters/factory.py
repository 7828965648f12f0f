"""The recaster a command asks for by engine name."""

from __future__ import annotations

from collections.abc import Sequence

from engines.errors import InputError
from stream.casts.cast import Cast
from stream.perception.stills import DEFAULT_DETECTOR
from stream.recasters.contract import IdentityRecaster, Recaster
from stream.recasters.warp import WarpRecaster


def make_recaster(engine: str, casts: Sequence[Cast] = (), *, color: bool = True,
                  detector: str = DEFAULT_DETECTOR) -> Recaster:
    """The recaster named on the command line (``identity`` or ``warp``); ``detector`` is the tracker's."""
    if engine == "identity":
        return IdentityRecaster()
    if engine == "warp":
        return WarpRecaster(casts, color=color, detector=detector)
    if engine in ("stylegan", "fomm"):
        raise InputError(f"the {engine} recaster plays a baked title: give --title ID --cache DIR "
                         "(`recast bake` makes one)")
    raise InputError(f"unknown engine {engine!r} (identity, warp, stylegan or fomm)")
