"""WHEP egress (stream/server/whep.py) with real aiortc players on 127.0.0.1: the offer answered 201 with its
Location and ETag, candidates trickled with PATCH, the choice from the query and on the control channel, DELETE,
CORS, and the RFC's answers to what it refuses; in one process and through the gateway and its workers."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest

from stream.casts.cast import collins_cast, hopper_cast
from stream.cli.serve_process import recast_serve_demo
from stream.server.clients import ViewerError, WhepViewer
from stream.server.service import SERVICE, ServerConfig
from tests.demo_title import DemoTitle
from tests.webrtc_client import run_async, serving

KEY = "k" * 24
CAST = "hopper"  # not the service's first cast (collins): the query picks it
FRAGMENT = "application/trickle-ice-sdpfrag"


def _face_psnr(frames: list[object], demo: DemoTitle) -> float:
    """Mean PSNR inside the face against the source frame of the same time."""
    scores = []
    for frame in frames:
        index = round(float(frame.pts * frame.time_base) * demo.fps)  # type: ignore[attr-defined]
        if index in demo.boxes and index < len(demo.frames):
            scores.append(demo.face_and_rest(frame.to_ndarray(format="rgb24"), index)[0])  # type: ignore[attr-defined]
    assert len(scores) >= 5
    return float(np.mean(scores))


def test_a_whep_player_watches_a_title_with_trickled_candidates_and_its_choice(demo: DemoTitle) -> None:
    """An offer without candidates, then a PATCH of them: 204, the picture arrives; `?recast=0` starts with the
    original, the control channel turns the recast on and picks another cast; DELETE ends the session (200)."""
    async def scenario() -> None:
        async with serving(demo.titles, ServerConfig(demo=True), casts=[collins_cast(), hopper_cast()]) as (
                base, app, http):
            async with http.options(f"{base}/whep/demo") as r:
                assert r.status == 204 and r.headers["Accept-Post"] == "application/sdp"
                assert r.headers["Access-Control-Allow-Origin"] == "*" and "POST" in r.headers["Allow"]
            player = WhepViewer(base, http)
            await player.connect("demo", "recast=0&cast=" + CAST, trickle=True)
            assert player.resource.startswith(f"{base}/whep/demo/") and player.etag
            sid = player.resource.rsplit("/", 1)[1]
            session = app[SERVICE].sessions[sid]
            assert session.state.enabled is False and session.state.cast == CAST
            off = await player.frames(20)
            state = await player.control({"type": "recast", "enabled": True})
            assert state["enabled"] is True and state["cast"] == CAST
            on = (await player.frames(30))[10:]
            face_off, face_on = _face_psnr(off, demo), _face_psnr(on, demo)
            print(f"face against the source: {face_off:.1f} dB off, {face_on:.1f} dB on")
            assert face_off > 28 and face_on < face_off - 6  # as the session API's toggle test asks
            assert player.audio is not None
            assert await player.delete() == 200
            assert sid not in app[SERVICE].sessions
            assert await player.patch("a=end-of-candidates\r\n") == 404
            await player.close()

    run_async(scenario)


def test_whep_refuses_what_the_rfc_refuses(demo: DemoTitle) -> None:
    """Keys (401; a preflight needs none), an unknown title (404), a body that is not SDP (415) or not an offer
    (400), too large (413), an unknown cast (400); on a session: an ICE restart (422), another entity-tag (412),
    a fragment of the wrong type (415), a malformed candidate (400). The session plays on throughout."""
    async def scenario() -> None:
        async with serving(demo.titles, ServerConfig(api_keys=(KEY,))) as (base, app, http):
            sdp = {"Content-Type": "application/sdp"}
            keyed = {**sdp, "Authorization": f"Bearer {KEY}"}
            async with http.post(f"{base}/whep/demo", data="v=0\r\n", headers=sdp) as r:
                assert r.status == 401 and r.headers["Access-Control-Allow-Origin"] == "*"
            async with http.options(f"{base}/whep/demo/anything") as r:
                assert r.status == 204 and r.headers["Accept-Patch"] == FRAGMENT
            refused = [("nobody", "v=0\r\n", keyed, 404), ("demo", "v=0\r\n", {**keyed, "Content-Type": "text/plain"},
                                                               415),
                       ("demo", "hello", keyed, 400), ("demo", "v=0\r\n" + "a=x\r\n" * 40000, keyed, 413)]
            for title, body, headers, status in refused:
                async with http.post(f"{base}/whep/{title}", data=body, headers=headers) as r:
                    assert r.status == status, (title, body[:20], await r.text())
            player = WhepViewer(base, http, key=KEY)
            with pytest.raises(ViewerError, match="400"):
                await player.connect("demo", "cast=nobody")
            await player.close()
            assert not app[SERVICE].sessions  # the refused one ended
            player = WhepViewer(base, http, key=KEY)
            await player.connect("demo")
            assert await player.patch("a=ice-ufrag:new1\r\na=ice-pwd:newpasswordnewpassword12\r\n") == 422
            assert await player.patch("a=end-of-candidates\r\n", if_match='"another"') == 412
            assert await player.patch("a=end-of-candidates\r\n", content_type="text/plain") == 415
            assert await player.patch("a=candidate:1 1 udp 9 300.1.1.1 9 typ host\r\n") == 400
            assert await player.patch("a=end-of-candidates\r\n", if_match=player.etag) == 204
            assert len(await player.frames(10)) == 10  # unharmed
            assert await player.delete() == 200
            await player.close()

    run_async(scenario)


def test_whep_through_the_gateway_and_its_workers() -> None:
    """`recast serve --demo` as the README starts it (a gateway and its workers): a WHEP player is placed on a
    worker, its trickled candidates and its DELETE forwarded there; /metrics counts it."""
    async def scenario() -> None:
        with recast_serve_demo() as server:
            async with aiohttp.ClientSession() as http:
                player = WhepViewer(server.base, http)
                await player.connect("demo", "recast=1", trickle=True)
                assert len(await player.frames(15)) == 15
                assert (await player.control({"type": "state"}))["enabled"] is True
                async with http.get(f"{server.base}/healthz") as r:
                    assert (await r.json())["sessions"] == 1
                assert await player.delete() == 200
                async with http.get(f"{server.base}/healthz") as r:
                    assert (await r.json())["sessions"] == 0
                assert await player.patch("a=end-of-candidates\r\n") == 404
                await player.close()

    run_async(scenario, timeout=120)


def test_many_whep_players_at_once(demo: DemoTitle) -> None:
    """Three players posting together each get their own session and picture."""
    async def scenario() -> None:
        async with serving(demo.titles, ServerConfig(demo=True)) as (base, app, http):
            players = [WhepViewer(base, http) for _ in range(3)]
            await asyncio.gather(*(p.connect("demo", trickle=i % 2 == 0) for i, p in enumerate(players)))
            assert len(app[SERVICE].sessions) == 3
            for player in players:
                assert len(await player.frames(5)) == 5
                assert await player.delete() == 200
                await player.close()

    run_async(scenario)
