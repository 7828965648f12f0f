"""Provenance: every recast frame is marked as synthetic.

A small badge ("RECAST · synthetic") is drawn in the bottom-right corner of each frame in which a face was
replaced, and output files carry metadata tags saying they were recast, with which recaster and cast.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

BADGE_TEXT = "RECAST - synthetic"


@dataclass(frozen=True)
class BadgeBox:
    x0: int
    y0: int
    x1: int
    y1: int


def badge_box(width: int, height: int) -> BadgeBox:
    """Where the badge goes for a frame size (scaled with the frame, inside a small margin)."""
    scale = max(0.35, min(width, height) / 720 * 0.6)
    (tw, th), base = cv2.getTextSize(BADGE_TEXT, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    pad = max(3, round(6 * scale))
    margin = max(4, round(min(width, height) * 0.02))
    x1, y1 = width - margin, height - margin
    return BadgeBox(max(0, x1 - tw - 2 * pad), max(0, y1 - th - base - 2 * pad), x1, y1)


def draw_badge(image: np.ndarray) -> BadgeBox:
    """Draw the visible badge in place; returns its rectangle (for fidelity measures that exclude it)."""
    h, w = image.shape[:2]
    box = badge_box(w, h)
    scale = max(0.35, min(w, h) / 720 * 0.6)
    region = image[box.y0:box.y1, box.x0:box.x1]
    region[:] = (region.astype(np.uint16) * 2 // 5 + 20).astype(np.uint8)  # darkened panel
    pad = max(3, round(6 * scale))
    _, base = cv2.getTextSize(BADGE_TEXT, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.putText(image, BADGE_TEXT, (box.x0 + pad, box.y1 - pad - base), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), 1, cv2.LINE_AA)
    return box


def file_metadata(recaster: Mapping[str, Any], source: str, mode: str) -> dict[str, str]:
    """Container tags for a recast output (mp4 with ``use_metadata_tags``)."""
    return {
        "comment": f"Recast output: faces replaced by the {recaster.get('engine')} recaster (synthetic media)",
        "recast": "1",
        "recast_engine": str(recaster.get("engine")),
        "recast_casts": json.dumps(recaster.get("casts", [])),
        "recast_mode": mode,
        "recast_source": source,
        "recast_time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
