"""Where the gateway puts a new session: a worker with room, on a machine with room.

A worker has room while it holds fewer sessions than its share of the service's (offers on their way count, so
viewers who arrive together are spread). A machine has room while what its workers use, plus one more session,
stays under CPU_ROOM of its cores: each worker counts for its measured CPU or for the sessions it holds at the
cost a session has been seen to take, whichever is more (a session that has just started shows little CPU yet; a
worker without one counts for none: its CPU is its start-up).
That cost is learnt from the workers' status: a worker whose sessions have all run SETTLED_S seconds tells it (its
CPU over its sessions), averaged from PRIOR_CORES on, so that viewers who come to a fresh service all at once are
bounded too. Among the workers
with room: the fewest sessions for their capacity first, then one that has played the title already, then the
least loaded. A session served by the relay (a baked title's renditions) costs next to nothing and is counted at
RELAY_CORES; a title whose last session was relayed is placed at that cost too.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from stream.server.fleet import Worker

CPU_ROOM = 1.0  # the sessions' CPU may fill a machine's cores, no more (a session's cost is its worker's whole CPU)
SETTLED_S = 3.0  # a worker's sessions all this old: its CPU tells what a session costs
COST_FOLLOW = 0.2  # the share of a new reading taken into the learnt cost
RELAY_CORES = 0.02  # what a relayed session is counted for (`recast bench --only relay` measures it)
PRIOR_CORES = 0.6  # what a session costs before any is measured: a 512x512 talking head at 25 fps on a 2-core EPYC


def held(worker: Worker) -> int:
    """The sessions a worker holds, and those on their way to it."""
    return len(worker.sessions) + worker.placing


def expected_cores(worker: Worker, cost: float) -> float:
    """What a worker's sessions should take: the live ones (and those on their way) at the learnt cost, the relayed
    ones at RELAY_CORES."""
    relayed = len(worker.relayed & worker.sessions) + worker.placing_relayed
    return (held(worker) - relayed) * cost + relayed * RELAY_CORES


class SessionCost:
    """The CPU (cores) a running session takes, learnt from the workers' status."""

    def __init__(self, prior: float | None = PRIOR_CORES) -> None:
        self.cores: float | None = prior  # None: unknown, the machines' CPU is not weighed

    def observe(self, worker: Worker, placed_at: Mapping[str, float], now: float | None = None) -> None:
        """Take in a worker's last status, if its sessions are old enough to tell (adopted ones are)."""
        now = time.monotonic() if now is None else now
        relayed = len(worker.relayed & worker.sessions)
        live = len(worker.sessions) - relayed
        if not live or any(now - placed_at.get(sid, 0.0) < SETTLED_S for sid in worker.sessions):
            return
        sample = max(0.0, float(worker.status.get("cpu_cores", 0.0)) - relayed * RELAY_CORES) / live
        self.cores = sample if self.cores is None else self.cores + COST_FOLLOW * (sample - self.cores)


def machine_has_room(worker: Worker, fleet: Iterable[Worker], cost: float | None, new: float | None = None) -> bool:
    """Whether the machine `worker` runs on has the CPU for one more session, which takes `new` cores (by default
    `cost`; see the module's text)."""
    cores = worker.status.get("node_cores")
    if cost is None or not cores:
        return True
    node = worker.status.get("node")
    load = sum(max(float(w.status.get("cpu_cores", 0.0)) if w.sessions else 0.0, expected_cores(w, cost))
               for w in fleet if w.status.get("node") == node)  # an idle worker's CPU is its start-up, not load
    return load + (cost if new is None else new) <= CPU_ROOM * float(cores)


def rank(fleet: list[Worker], title: str | None, per_worker: int, cost: float | None, relayed: bool = False
         ) -> list[Worker]:
    """The workers of `fleet` (those up) with room for a new session of `title`, best first; `relayed`: the title's
    sessions have been relayed (they are counted at RELAY_CORES)."""
    new = RELAY_CORES if relayed else cost
    room = [w for w in fleet if held(w) < per_worker and not w.status.get("draining")
            and machine_has_room(w, fleet, cost, new)]
    return sorted(room, key=lambda w: (held(w) / per_worker, title not in w.titles,
                                       float(w.status.get("cpu_cores", 0.0))))
