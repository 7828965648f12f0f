"""The one place work fans out: a function over a list of jobs, here (`local`) or as Ray tasks (`ray`), with the
results in the jobs' order. Bakes (one task per title, export/executors.py) and stitching segments (one task per
segment, export/stitching.py) both run through it.

Ray is imported only for `ray`, and started only when it is not already (inside a Ray task it is, and the jobs
become nested tasks of the same cluster): at `address`, else `RAY_ADDRESS`, else a local cluster with this
machine's cores. Its workers import this project from its folder, wherever the driver runs it from. Each task
asks for one GPU where the cluster has GPUs. A Ray started here is shut down when the work is done.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

J = TypeVar("J")
R = TypeVar("R")
EXECUTORS = ("local", "ray")


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[Any]:
    """The ``ray`` module, initialised; shut down on leaving only if this call started it."""
    import ray

    started = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        root = str(Path(__file__).resolve().parents[1])
        env = {"env_vars": {"PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}}
        if address:
            ray.init(address=address, runtime_env=env, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, runtime_env=env, log_to_driver=False)
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def run_tasks(fn: Callable[[J], R], jobs: Sequence[J], executor: str = "local", address: str | None = None,
              on_done: Callable[[int, R], None] | None = None) -> list[R]:
    """``[fn(job) for job in jobs]``, here or on Ray; ``on_done(count_done, result)`` after each, in order."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor {executor!r}: one of {', '.join(EXECUTORS)}")
    results: list[R] = []
    if executor == "local":
        for job in jobs:
            results.append(fn(job))
            if on_done is not None:
                on_done(len(results), results[-1])
        return results
    with ray_session(address) as ray:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_gpus=gpus, max_retries=1)(fn)
        refs = [task.remote(job) for job in jobs]
        for ref in refs:
            results.append(ray.get(ref))
            if on_done is not None:
                on_done(len(results), results[-1])
    return results
