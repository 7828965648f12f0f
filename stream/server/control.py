"""The control protocol of a session (DESIGN.md's control messages), on its own: parse a message, check it against what
the session offers (its recaster's casts and edits), change the viewer's state, and answer; and how many a session
may send a second (`ControlBudget`). No WebRTC here, so every rule is tested with plain strings
(tests/test_control.py); `Session` sends the replies over the `control` data channel and counts them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from engines.edits import MAX_FACTOR, EditError, edit_factor
from stream.server.validate import Refused, parse_json

MAX_CONTROL_BYTES = 4096
CONTROL_RATE = 50.0  # messages a second a session may send (a slider dragged sends some 30-60), bursting to:
CONTROL_BURST = 100
CONTROL_FLOOD = 500  # messages over the rate (less CONTROL_RATE a second) that end the session ("control_flood")


class ControlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class ControlState:
    """What the viewer chose; read by the frame worker at render time (assignments are atomic)."""

    enabled: bool = True
    cast: str = ""
    casts_by_track: dict[int, str] = field(default_factory=dict)
    edits: dict[str, float] = field(default_factory=dict)
    frame: int = 0
    latency_ms: float = 0.0
    path: str = "live"  # what serves the viewer: live (the session renders), relay (baked renditions)

    def as_message(self) -> dict[str, Any]:
        return {"type": "state", "enabled": self.enabled, "cast": self.cast,
                "tracks": {str(k): v for k, v in self.casts_by_track.items()}, "edits": dict(self.edits),
                "frame": self.frame, "latency_ms": round(self.latency_ms, 1), "path": self.path}


class ControlBudget:
    """The rate limit of one session's control messages: a token bucket of CONTROL_RATE a second that bursts to
    CONTROL_BURST. `take()` says what to do with the next message: "ok" (handle it), "refuse" (the first one over
    the rate since the last allowed: answer `rate_limited`), "drop" (over the rate again: no answer, so a flood costs
    no replies), or "flood": the messages over the rate, leaking away at CONTROL_RATE a second, reached
    CONTROL_FLOOD (a sender some 10x over the rate gets there within a second): end the session."""

    def __init__(self, rate: float = CONTROL_RATE, burst: int = CONTROL_BURST, flood: int = CONTROL_FLOOD,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.flood, self.clock = rate, float(burst), flood, clock
        self.tokens, self.last, self.over, self.refused = float(burst), clock(), 0.0, False

    def take(self) -> str:
        now = self.clock()
        elapsed, self.last = now - self.last, now
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.over = max(0.0, self.over - elapsed * self.rate)
        if self.tokens >= 1:
            self.tokens -= 1
            self.refused = False
            return "ok"
        self.over += 1
        if self.over >= self.flood:
            return "flood"
        if self.refused:
            return "drop"
        self.refused = True
        return "refuse"


class Control:
    """One session's control rules. `cast_ids` are the casts a viewer may choose; `edits` the directions a viewer
    may set, or None where the session has no baked StyleGAN title (an edit is then refused as `not_baked`)."""

    def __init__(self, state: ControlState, cast_ids: Collection[str], edits: Collection[str] | None) -> None:
        self.state, self.cast_ids, self.edits = state, set(cast_ids), edits

    def handle(self, raw: Any) -> tuple[dict[str, Any], str, str]:
        """Apply one message: (reply, the message type to count, outcome). Never raises. A refused message is
        counted as type `invalid` with its error code as the outcome."""
        try:
            message = self._parse(raw)
            self._apply(message)
        except ControlError as err:
            return self.refuse(err)
        return self.state.as_message(), message["type"], "ok"

    @staticmethod
    def refuse(err: ControlError) -> tuple[dict[str, Any], str, str]:
        """The `error` reply to an invalid message, counted as type `invalid` with its code as the outcome."""
        return {"type": "error", "error": err.code, "message": str(err)}, "invalid", err.code

    def _parse(self, raw: Any) -> dict[str, Any]:
        if isinstance(raw, bytes):
            raise ControlError("bad_message", "control messages are JSON text, not binary")
        if not isinstance(raw, str) or len(raw.encode("utf-8", "replace")) > MAX_CONTROL_BYTES:
            raise ControlError("too_large", f"control messages are at most {MAX_CONTROL_BYTES} bytes")
        try:
            message = parse_json(raw)
        except Refused as err:
            raise ControlError(err.code, str(err)) from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise ControlError("bad_message", "a control message is an object with a 'type'")
        return message

    def _apply(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "recast":
            enabled = message.get("enabled")
            if not isinstance(enabled, bool):
                raise ControlError("bad_message", "'enabled' must be true or false")
            self.state.enabled = enabled
        elif kind == "cast":
            cast, track = message.get("cast"), message.get("track", "all")
            if not isinstance(cast, str) or cast not in self.cast_ids:
                raise ControlError("unknown_cast", f"no cast {str(cast)[:64]!r}; see /api/casts")
            if track == "all":
                self.state.casts_by_track = {}
                self.state.cast = cast
            elif isinstance(track, int) and not isinstance(track, bool) and 0 <= track < 1_000_000:
                if len(self.state.casts_by_track) >= 64 and track not in self.state.casts_by_track:
                    raise ControlError("too_many", "at most 64 per-track casts")
                self.state.casts_by_track = {**self.state.casts_by_track, track: cast}
            else:
                raise ControlError("bad_message", "'track' must be a track id (integer) or \"all\"")
        elif kind == "edit":
            direction, factor = message.get("direction"), message.get("factor")
            if self.edits is None:
                raise ControlError("not_baked", "edits need a pre-baked title and a StyleGAN2 bake")
            try:
                if not isinstance(direction, str) or isinstance(factor, str):
                    raise EditError("'direction' must be a name")
                factor = edit_factor(factor, "'factor'")
            except EditError as err:
                raise ControlError("bad_message", f"{err} ('direction' a name, 'factor' a number in "
                                   f"[-{MAX_FACTOR:g}, {MAX_FACTOR:g}])") from None
            if direction not in self.edits:
                raise ControlError("unknown_direction", f"no direction {direction[:64]!r} for this title; see "
                                   "/api/titles")
            self.state.edits = {**self.state.edits, direction: float(factor)}
        elif kind == "state":
            pass  # a poll: the reply is the state (the preview page shows its latency once a second)
        else:
            raise ControlError("unknown_type", f"unknown control message type {kind[:32]!r}")
