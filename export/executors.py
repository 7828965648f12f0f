"""Where bakes run: in this process (`local`) or as Ray tasks (`ray`), one task per title, one GPU each when the
cluster has GPUs. Both run the same `bake_title` on the same inputs, so their results are the same files.

A task gets paths, not loaded models: each worker opens the checkpoints itself (the files must be readable at the
same paths on every node, e.g. a shared volume), and checks their sha256 like any bake does. Ray is imported only
for `--executor ray`; `RAY_ADDRESS` (or `--ray-address`) points at an existing cluster, otherwise a local one starts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.bake import BakeOptions, Models, Progress, bake_title

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
    """Each job a Ray task; results in the order of `jobs`. A local cluster starts unless an address is given."""
    import ray

    started = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        # the workers import this project from its folder, wherever the driver runs it from
        root = str(Path(__file__).resolve().parents[1])
        env = {"env_vars": {"PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}}
        if address:
            ray.init(address=address, runtime_env=env, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, runtime_env=env, log_to_driver=False)
        started = True
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_gpus=gpus, max_retries=1)(run_job)
        refs = [task.remote(job, options) for job in jobs]
        results: list[dict[str, Any]] = []
        for ref in refs:
            result = ray.get(ref)
            if on_done is not None:
                on_done(result)
            results.append(result)
        return results
    finally:
        if started:
            ray.shutdown()
