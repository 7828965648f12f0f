"""Where bakes run: in this process (`local`) or as Ray tasks (`ray`), one task per title, one GPU each when the
cluster has GPUs. Both run the same `bake_title` on the same inputs, so their results are the same files.

A task gets paths, not loaded models: each worker opens the checkpoints itself (the files must be readable at the
same paths on every node, e.g. a shared volume), and checks their sha256 like any bake does. Ray is imported only
for `--executor ray` (export/tasks.py); `RAY_ADDRESS` (or `--ray-address`) points at an existing cluster,
otherwise a local one starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from export.bake import Models, Progress, bake_title
from export.options import BakeOptions
from export.tasks import run_tasks

log = logging.getLogger(__name__)


@dataclass
class BakeJob:
    title_id: str
    source: str
    cache: str
    generator: str | None = None
    encoder: str | None = None
    fomm: str | None = None
    cache_limit_bytes: int | None = None


def run_job(job: BakeJob, options: BakeOptions, progress: Progress | None = None) -> dict[str, Any]:
    from engines.cache import TitleCache

    models = Models.open(job.generator, job.encoder, job.fomm)
    report = bake_title(TitleCache(job.cache, job.cache_limit_bytes), job.title_id, job.source, models, options,
                        progress)
    return report.as_dict()


def run_local(jobs: list[BakeJob], options: BakeOptions, progress: Progress | None = None) -> list[dict[str, Any]]:
    return [run_job(job, options, progress) for job in jobs]


def run_ray(jobs: list[BakeJob], options: BakeOptions, address: str | None = None,
            on_done: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Each job a Ray task (export/tasks.py); results in the order of `jobs`."""
    return run_tasks(_run_pair, [(job, options) for job in jobs], "ray", address,
                     on_done=(lambda _n, result: on_done(result)) if on_done else None)


def _run_pair(pair: tuple[BakeJob, BakeOptions]) -> dict[str, Any]:
    return run_job(*pair)  # a plain module-level function: what Ray makes a task of
