"""Where the gateway puts a new session (stream/server/placement.py): the session counts, the machine's CPU against
what a session has been seen to cost, offers on their way, and the order among the workers with room."""

from __future__ import annotations

from stream.server.fleet import Worker
from stream.server.placement import (
    COST_FOLLOW,
    CPU_ROOM,
    PRIOR_CORES,
    RELAY_CORES,
    SETTLED_S,
    SessionCost,
    expected_cores,
    machine_has_room,
    rank,
)


def _worker(name: str, sessions: int = 0, cpu: float = 0.0, node: str = "a", cores: int = 2,
            placing: int = 0) -> Worker:
    worker = Worker(name, f"http://127.0.0.1/{name}", handle=None)
    worker.sessions = {f"{name}-s{i}" for i in range(sessions)}
    worker.placing = placing
    worker.status = {"cpu_cores": cpu, "node": node, "node_cores": cores}
    return worker


def test_the_cost_of_a_session_is_learnt_from_workers_whose_sessions_have_settled() -> None:
    fresh = SessionCost()
    assert fresh.cores == PRIOR_CORES  # a fresh service weighs its machines with the prior
    fresh.observe(_worker("w0", sessions=1, cpu=1.0), {}, now=100.0)
    assert fresh.cores is not None and abs(fresh.cores - (PRIOR_CORES + COST_FOLLOW * (1.0 - PRIOR_CORES))) < 1e-9
    cost = SessionCost(prior=None)
    busy = _worker("w0", sessions=2, cpu=1.2)
    cost.observe(busy, {sid: 100.0 for sid in busy.sessions}, now=100.0 + SETTLED_S / 2)
    assert cost.cores is None  # too young to tell: a starting session shows little CPU
    cost.observe(busy, {sid: 100.0 for sid in busy.sessions}, now=100.0 + SETTLED_S)
    assert cost.cores is not None and abs(cost.cores - 0.6) < 1e-9
    cost.observe(_worker("w1", sessions=1, cpu=1.0), {}, now=200.0)  # adopted sessions are old
    assert cost.cores is not None and 0.6 < cost.cores < 1.0  # averaged, not replaced
    cost.observe(_worker("w2"), {}, now=300.0)  # no session: nothing to learn
    assert cost.cores is not None and cost.cores < 1.0


def test_a_machine_takes_sessions_while_their_cpu_stays_under_its_cores() -> None:
    """2 cores and sessions of 0.6: three fit (1.8 of 2), a fourth does not; a worker that has just been given a
    session counts for its cost before its CPU shows it."""
    fleet = [_worker("w0", 1, 0.6), _worker("w1", 1, 0.6), _worker("w2")]
    assert machine_has_room(fleet[2], fleet, 0.6)
    fleet[2].sessions, fleet[2].status["cpu_cores"] = {"w2-s0"}, 0.05  # placed a moment ago
    assert not machine_has_room(fleet[2], fleet, 0.6)
    assert rank(fleet, "demo", per_worker=3, cost=0.6) == []  # the whole machine is full: 503 busy
    assert machine_has_room(fleet[2], fleet, None)  # nothing learnt yet: the session counts alone decide
    assert not machine_has_room(fleet[0], [*fleet, _worker("other", 0, 0.0, node="b")], 0.6)
    assert machine_has_room(_worker("b0", node="b"), [*fleet, _worker("b0", node="b")], 0.6)  # another machine
    assert CPU_ROOM * 2 >= 3 * 0.6
    starting = [_worker("s0", cpu=1.0), _worker("s1", cpu=1.0), _worker("s2", cpu=0.9)]  # loading their models
    assert all(machine_has_room(w, starting, 0.6) for w in starting)


def test_workers_with_room_are_ranked_by_sessions_then_title_then_load() -> None:
    a, b, c = _worker("a", 1, 0.5), _worker("b", 0, 0.1), _worker("c", 0, 0.0, placing=1)
    b.titles.add("demo")
    # c's offer on its way counts as a session: c ties with a and goes first for its lower load
    assert rank([a, b, c], "demo", per_worker=2, cost=None) == [b, c, a]
    a.titles.add("demo")
    assert rank([a, b, c], "demo", per_worker=2, cost=None) == [b, a, c]  # a has played the title
    d = _worker("d", 0, 0.3)
    assert rank([d, b], "other", per_worker=2, cost=None) == [b, d]  # no title played: the least loaded
    full = _worker("full", 2, 0.2)
    assert full not in rank([full, b], "demo", per_worker=2, cost=None)
    b.status["draining"] = True
    assert rank([b], "demo", per_worker=2, cost=None) == []


def test_relayed_sessions_are_counted_at_their_own_small_cost() -> None:
    """A worker relaying ten viewers of a baked title beside one live session leaves room for more relayed ones
    where a live one no longer fits; the cost learnt from it is that of its live session only."""
    relaying = _worker("r", sessions=11, cpu=0.9)
    relaying.relayed = {f"r-s{i}" for i in range(10)}  # ten relayed, one live
    assert expected_cores(relaying, 0.6) == 0.6 + 10 * RELAY_CORES
    fleet = [relaying, _worker("w1", 1, 0.6)]
    assert machine_has_room(fleet[1], fleet, 0.6) is False  # 0.9 + 0.6 + 0.6 > 2
    assert rank(fleet, "baked", per_worker=64, cost=0.6, relayed=True) != []  # a relayed viewer still fits
    cost = SessionCost(prior=None)
    cost.observe(relaying, {}, now=100.0)
    assert cost.cores is not None and abs(cost.cores - (0.9 - 10 * RELAY_CORES)) < 1e-9
    only_relayed = _worker("o", sessions=2, cpu=0.05)
    only_relayed.relayed = set(only_relayed.sessions)
    cost.observe(only_relayed, {}, now=100.0)
    assert abs(cost.cores - (0.9 - 10 * RELAY_CORES)) < 1e-9  # nothing learnt from relayed sessions
