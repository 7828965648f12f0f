"""A small Prometheus registry: counters, gauges and histograms with labels, rendered in the text format."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 250, 500, 1000, 2500)
Labels = tuple[tuple[str, str], ...]


def _labels(values: dict[str, str]) -> Labels:
    return tuple(sorted(values.items()))


def _fmt(labels: Labels, extra: Labels = ()) -> str:
    items = labels + extra
    if not items:
        return ""
    body = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in items)
    return "{" + body + "}"


class Metric:
    def __init__(self, name: str, help_text: str, kind: str) -> None:
        self.name, self.help, self.kind = name, help_text, kind
        self._lock = threading.Lock()

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class _Scalar(Metric):
    """One number per label set (counters and gauges)."""

    def __init__(self, name: str, help_text: str, kind: str) -> None:
        super().__init__(name, help_text, kind)
        self._values: dict[Labels, float] = {}

    def value(self, **labels: str) -> float:
        return self._values.get(_labels(labels), 0)

    def drop(self, label: tuple[str, str]) -> None:
        with self._lock:
            self._values = {k: v for k, v in self._values.items() if label not in k}

    def render(self) -> list[str]:
        with self._lock:
            return super().render() + [f"{self.name}{_fmt(k)} {v:g}" for k, v in sorted(self._values.items())]


class Counter(_Scalar):
    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text, "counter")

    def inc(self, amount: float = 1, **labels: str) -> None:
        key = _labels(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount


class Gauge(_Scalar):
    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text, "gauge")

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self._values[_labels(labels)] = value


class Histogram(Metric):
    def __init__(self, name: str, help_text: str, buckets: Sequence[float] = LATENCY_BUCKETS_MS) -> None:
        super().__init__(name, help_text, "histogram")
        self.buckets = tuple(buckets)
        self._counts: dict[Labels, list[int]] = {}
        self._sums: dict[Labels, float] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = _labels(labels)
        with self._lock:
            counts = self._counts.setdefault(key, [0] * (len(self.buckets) + 1))
            counts[bisect.bisect_left(self.buckets, value)] += 1
            self._sums[key] = self._sums.get(key, 0.0) + value

    def count(self, **labels: str) -> int:
        return sum(self._counts.get(_labels(labels), []))

    def drop(self, label: tuple[str, str]) -> None:
        with self._lock:
            self._counts = {k: v for k, v in self._counts.items() if label not in k}
            self._sums = {k: v for k, v in self._sums.items() if label not in k}

    def render(self) -> list[str]:
        lines = super().render()
        with self._lock:
            for key, counts in sorted(self._counts.items()):
                total = 0
                for bound, count in zip((*self.buckets, float("inf")), counts, strict=True):
                    total += count
                    le = "+Inf" if bound == float("inf") else f"{bound:g}"
                    lines.append(f"{self.name}_bucket{_fmt(key, (('le', le),))} {total}")
                lines.append(f"{self.name}_sum{_fmt(key)} {self._sums[key]:g}")
                lines.append(f"{self.name}_count{_fmt(key)} {total}")
        return lines


# process-wide: rendition streams are opened once per process, when titles are scanned (stream/server/relay.py)
RENDITIONS_REFUSED = Counter("recast_renditions_refused_total",
                             "Rendition streams not relayed, by title and reason (failed checks, changed on disk)")


class Registry:
    def __init__(self) -> None:
        self.sessions = Gauge("recast_sessions", "Open sessions by kind")
        self.sessions_total = Counter("recast_sessions_total", "Sessions created, by kind and how they ended")
        self.frames_in = Counter("recast_frames_in_total", "Frames decoded or received, per session")
        self.frames_out = Counter("recast_frames_out_total", "Frames sent, per session")
        self.frames_dropped = Counter("recast_frames_dropped_total", "Frames dropped to keep latency bounded")
        self.faces_failed = Counter("recast_faces_failed_total", "Faces passed through after a recaster error")
        self.stage_ms = Histogram("recast_stage_latency_ms", "Per-frame stage latency in milliseconds")
        self.latency_ms = Histogram("recast_frame_latency_ms", "Source due time to frame handed to WebRTC, ms")
        self.requests = Counter("recast_http_requests_total", "HTTP requests by route and status")
        self.control = Counter("recast_control_messages_total", "Control messages by type and outcome")

    def render(self) -> str:
        metrics: list[Metric] = [self.sessions, self.sessions_total, self.frames_in, self.frames_out,
                                 self.frames_dropped, self.faces_failed, self.stage_ms, self.latency_ms,
                                 self.requests, self.control, RENDITIONS_REFUSED]
        return "\n".join(line for m in metrics for line in m.render()) + "\n"

    def forget_session(self, session: str) -> None:
        """Drop a closed session's per-session series so /metrics does not grow without bound."""
        per_session: list[_Scalar | Histogram] = [self.frames_in, self.frames_out, self.frames_dropped,
                                                  self.faces_failed, self.stage_ms, self.latency_ms]
        for metric in per_session:
            metric.drop(("session", session))
