"""export/tasks.py, the one fan-out of the project (bakes and stitching segments): the same results, in the same
order, with the same progress calls, here and on a local Ray cluster; Ray left as it was found."""

from __future__ import annotations

import os

import pytest

from export.tasks import run_tasks
from tests.fanout import square_with_pid


def test_local_and_ray_give_the_same_results_in_order() -> None:
    import ray

    jobs = [3, 1, 4, 1, 5, 9, 2, 6]
    seen: dict[str, list[tuple[int, int]]] = {"local": [], "ray": []}
    results = {}
    for executor in ("local", "ray"):
        out = run_tasks(square_with_pid, jobs, executor,
                        on_done=lambda n, r, e=executor: seen[e].append((n, r[0])))  # type: ignore[misc]
        results[executor] = out
    assert [r[0] for r in results["local"]] == [r[0] for r in results["ray"]] == [j * j for j in jobs]
    assert seen["local"] == seen["ray"] == [(i + 1, j * j) for i, j in enumerate(jobs)]
    assert {r[1] for r in results["local"]} == {os.getpid()}
    assert os.getpid() not in {r[1] for r in results["ray"]}, "Ray ran them in its workers"
    assert not ray.is_initialized(), "a Ray started for the work is shut down after it"


def test_an_unknown_executor_is_refused() -> None:
    with pytest.raises(ValueError, match="executor 'dask'"):
        run_tasks(square_with_pid, [1], "dask")
