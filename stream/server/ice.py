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
