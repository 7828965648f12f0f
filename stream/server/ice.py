"""ICE host candidates: `--ice-host` restricts them to the given addresses.

aioice gathers host candidates from every interface except loopback and offers no per-connection option, so the
restriction replaces its address lookup for the whole process (every peer connection the server makes). Tests
keep all WebRTC traffic on 127.0.0.1 this way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import aioice.ice

_original: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses


def restrict_host_candidates(hosts: Sequence[str] | None) -> None:
    """Gather host candidates on `hosts` only; None restores aioice's own choice."""
    if not hosts:
        aioice.ice.get_host_addresses = _original  # type: ignore[assignment]
        return
    chosen = list(hosts)

    def only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [h for h in chosen if (":" in h and use_ipv6) or (":" not in h and use_ipv4)]

    aioice.ice.get_host_addresses = only


_CONSENT = (aioice.ice.CONSENT_INTERVAL, aioice.ice.CONSENT_FAILURES)
CONSENT_INTERVAL_S = 2  # seconds (aioice's setting is an int)
CONSENT_TIMEOUT_S = 0.5  # aioice's first STUN timeout: a consent request unanswered this long has failed


def consent_checks(silent_s: float | None) -> None:
    """Declare a peer gone once it has answered no ICE consent check (RFC 7675) for about ``silent_s`` seconds;
    None restores aioice's own pace.

    aioice checks consent every 5 s and gives up after 6 failures in a row, so a peer that vanished without a
    word (a closed laptop, a frozen tab) held its session, threads and encoder for 30-34 s. Here the checks come
    every 2 s (randomised by 0.8-1.2, as RFC 7675 asks) and each one waits 0.5 s for its answer, so
    ``silent_s / 2.5`` failures in a row take about ``silent_s``. Like the host candidates, these are aioice
    module settings and apply to every peer connection in the process."""
    if silent_s is None:
        aioice.ice.CONSENT_INTERVAL, aioice.ice.CONSENT_FAILURES = _CONSENT
        return
    aioice.ice.CONSENT_INTERVAL = CONSENT_INTERVAL_S
    aioice.ice.CONSENT_FAILURES = max(1, round(silent_s / (CONSENT_INTERVAL_S + CONSENT_TIMEOUT_S)))
