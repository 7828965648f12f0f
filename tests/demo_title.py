"""The demo title as the service tests see it: its decoded frames, a face box per frame from offline tracking, and
PSNR inside and outside the face of a received picture."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream.cli.demo_title import demo_title_path
from stream.media.sources import MediaSource
from stream.render.options import RenderOptions
from stream.render.pipeline import run_tracking
from stream.server.titles import Title, scan_titles
from tests.conftest import psnr

Box = tuple[int, int, int, int]


@dataclass
class DemoTitle:
    titles: dict[str, Title]
    frames: list[np.ndarray]
    boxes: dict[int, Box]
    fps: int = 25

    @classmethod
    def load(cls) -> DemoTitle:
        path = demo_title_path()
        with MediaSource(path, keep_audio=False) as source:
            frames = [f.image for f in source.frames()]
        boxes = {}
        for index, faces in run_tracking(path, RenderOptions()).by_frame().items():
            pts = faces[0].landmarks
            boxes[index] = (int(pts[:, 0].min()), int(pts[:, 1].min()), int(pts[:, 0].max()), int(pts[:, 1].max()))
        return cls(scan_titles(None, path), frames, boxes)

    def face_and_rest(self, image: np.ndarray, index: int) -> tuple[float, float]:
        """PSNR inside the face and well outside it against source frame `index`."""
        inside, outside = regions(image.shape, self.boxes[index])
        source = self.frames[index]
        return psnr(image, source, inside), psnr(image, source, outside)

    def best_match(self, image: np.ndarray) -> int:
        """The source frame a received picture shows, when its timestamp is unknown (a browser's canvas): the one
        whose area outside the face agrees best."""
        scores = {i: self.face_and_rest(image, i)[1] for i in self.boxes if i < len(self.frames)}
        return max(scores, key=lambda i: scores[i])


def regions(shape: tuple[int, ...], box: Box) -> tuple[np.ndarray, np.ndarray]:
    """Inside the face (shrunk a little) and well outside it, away from the badge corner."""
    h, w = shape[:2]
    x0, y0, x1, y1 = box
    inside = np.zeros((h, w), bool)
    mx, my = (x1 - x0) // 6, (y1 - y0) // 6
    inside[y0 + my : y1 - my, x0 + mx : x1 - mx] = True
    outside = np.ones((h, w), bool)
    pad = (x1 - x0) // 2
    outside[max(0, y0 - pad) : y1 + pad, max(0, x0 - pad) : x1 + pad] = False
    outside[int(h * 0.8) :, int(w * 0.6) :] = False  # badge
    return inside, outside
