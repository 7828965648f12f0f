"""The control rules of a session, one short test each, without WebRTC: `Control` on plain strings, and a whole
session's processing through tests/session_harness.py (the same Session, frame processor and recaster that
`recast serve` builds for a viewer). The real-peer scenarios are in tests/test_server*.py."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from stream.casts.cast import CastError, cast_from_file, hopper_cast
from stream.recasters.contract import IdentityRecaster
from stream.recasters.routing import ByCastRecaster
from stream.recasters.warp import WarpRecaster
from stream.server.control import MAX_CONTROL_BYTES, Control, ControlBudget, ControlState
from tests.conftest import media, psnr
from tests.demo_title import regions
from tests.session_harness import SessionHarness

CASTS = {"hopper", "s42"}


def control(edits: list[str] | None = None) -> Control:
    return Control(ControlState(cast="hopper"), CASTS | ({"actor"} if edits is not None else set()), edits)


def refused(reply: dict[str, Any]) -> str:
    assert reply["type"] == "error" and reply["message"], reply
    return str(reply["error"])


@pytest.mark.parametrize(("raw", "code"), [
    (b"\x00\x01binary", "bad_message"),
    ("x" * (MAX_CONTROL_BYTES + 1), "too_large"),
    ("not json", "bad_json"),
    ("[" * 2000 + "]" * 2000, "too_deep"),
    ("[1, 2]", "bad_message"),
    ('{"enabled": true}', "bad_message"),
    ('{"type": "launch"}', "unknown_type"),
    ('{"type": "recast", "enabled": "yes"}', "bad_message"),
    ('{"type": "recast", "enabled": 1}', "bad_message"),
    ('{"type": "cast", "cast": "../../etc/passwd"}', "unknown_cast"),
    ('{"type": "cast", "cast": "actor"}', "unknown_cast"),  # no baked title: no actor
    ('{"type": "cast", "cast": "hopper", "track": -1}', "bad_message"),
    ('{"type": "cast", "cast": "hopper", "track": true}', "bad_message"),
    ('{"type": "cast", "cast": "hopper", "track": "2"}', "bad_message"),
    ('{"type": "cast", "cast": "hopper", "track": 1000000}', "bad_message"),
    ('{"type": "edit", "direction": "age", "factor": 2}', "not_baked"),
])
def test_each_bad_message_is_refused_with_its_code_and_changes_nothing(raw: Any, code: str) -> None:
    rules = control()
    before = rules.state.as_message()
    reply, kind, outcome = rules.handle(raw)
    assert refused(reply) == code and (kind, outcome) == ("invalid", code)
    assert rules.state.as_message() == before


def test_toggle_cast_for_all_and_per_track() -> None:
    rules = control()
    assert rules.handle('{"type": "recast", "enabled": false}')[0]["enabled"] is False
    reply, kind, outcome = rules.handle('{"type": "cast", "cast": "s42", "track": 3}')
    assert (kind, outcome) == ("cast", "ok") and reply["tracks"] == {"3": "s42"} and reply["cast"] == "hopper"
    reply = rules.handle('{"type": "cast", "cast": "s42", "track": "all"}')[0]
    assert reply["cast"] == "s42" and reply["tracks"] == {}  # "all" replaces every per-track choice
    assert rules.handle('{"type": "state"}')[0] == {**reply, "type": "state"}


def test_per_track_casts_are_bounded() -> None:
    rules = control()
    for track in range(64):
        assert rules.handle(json.dumps({"type": "cast", "cast": "s42", "track": track}))[1] == "cast"
    assert refused(rules.handle('{"type": "cast", "cast": "s42", "track": 64}')[0]) == "too_many"
    assert rules.handle('{"type": "cast", "cast": "hopper", "track": 5}')[1] == "cast"  # a known track may change


@pytest.mark.parametrize(("edit", "code"), [
    ({"direction": "pose", "factor": 1}, "unknown_direction"),
    ({"direction": "age", "factor": 21}, "bad_message"),
    ({"direction": "age", "factor": "2"}, "bad_message"),
    ({"direction": "age", "factor": None}, "bad_message"),
    ({"direction": 3, "factor": 1}, "bad_message"),
])
def test_edit_rules_on_a_baked_title(edit: dict[str, Any], code: str) -> None:
    rules = control(edits=["age", "smile"])
    assert refused(rules.handle(json.dumps({"type": "edit", **edit}))[0]) == code
    assert rules.state.edits == {}


def test_edits_accumulate_per_direction_and_a_baked_title_offers_its_actor() -> None:
    rules = control(edits=["age", "smile"])
    rules.handle('{"type": "edit", "direction": "age", "factor": 2}')
    reply = rules.handle('{"type": "edit", "direction": "smile", "factor": -1.5}')[0]
    assert reply["edits"] == {"age": 2.0, "smile": -1.5}
    assert rules.handle('{"type": "cast", "cast": "actor"}')[0]["cast"] == "actor"
    assert rules.handle('{"type": "edit", "direction": "age", "factor": "NaN"}')[1] == "invalid"


# --- a whole session, without WebRTC ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def casts() -> list[Any]:
    return [hopper_cast(), cast_from_file(media("images/liveportrait_s42.jpg"))]


def test_the_session_offers_what_its_recaster_offers_and_counts_replies(casts: list[Any], demo: Any) -> None:
    harness = SessionHarness(casts, demo.titles["demo"])
    assert harness.session.control.cast_ids == {"hopper", "liveportrait_s42"}
    assert harness.session.control.edits is None  # a title played live: no edits
    assert harness.send({"type": "cast", "cast": "liveportrait_s42"})["cast"] == "liveportrait_s42"
    assert refused(harness.send({"type": "cast", "cast": "nobody"})) == "unknown_cast"
    assert harness.counted("cast", "ok") == 1 and harness.counted("invalid", "unknown_cast") == 1


def test_the_toggle_takes_effect_on_the_next_frame(casts: list[Any], demo: Any) -> None:
    harness = SessionHarness(casts, demo.titles["demo"])
    on = harness.play(demo.frames[:8])
    for index, image in on.items():
        face, rest = demo.face_and_rest(image, index)
        # the face is recast, the rest is the source with the invisible mark (up to 5 levels where the picture is
        # busy: 36-37 dB here)
        assert face < 30 and rest > 34, (index, face, rest)
    harness.send({"type": "recast", "enabled": False})
    off = harness.play(demo.frames[8:14], start=8)
    assert off and all(np.array_equal(image, demo.frames[i]) for i, image in off.items())


def test_a_per_track_cast_changes_that_face_only(casts: list[Any], demo: Any) -> None:
    title = demo.titles["demo"]
    plain = SessionHarness(casts, title).play(demo.frames[:8])
    other, elsewhere = SessionHarness(casts, title), SessionHarness(casts, title)
    other.send({"type": "cast", "cast": "liveportrait_s42", "track": 1})  # the demo's one face is track 1
    elsewhere.send({"type": "cast", "cast": "liveportrait_s42", "track": 7})  # a track that is not there
    changed, same = other.play(demo.frames[:8]), elsewhere.play(demo.frames[:8])
    for index in plain:
        inside, outside = regions(plain[index].shape, demo.boxes[index])
        assert psnr(changed[index], plain[index], inside) < 30, index  # another face
        assert psnr(changed[index], plain[index], outside) > 50, index  # the same picture around it
        assert np.abs(same[index].astype(int) - plain[index]).mean() < 0.5, index


def test_every_recaster_takes_a_viewers_choice_or_refuses_it(casts: list[Any]) -> None:
    """One contract: a recaster names the casts and edits it offers; a choice outside them is an error, never
    silently ignored; a session's copy keeps its own choices."""
    identity = IdentityRecaster()
    assert identity.cast_ids() == [] and identity.edit_names() == [] and identity.session_copy() is identity
    with pytest.raises(CastError):
        identity.assign(1, "hopper")
    identity.set_edits({})  # nothing asked: fine
    with pytest.raises(CastError):
        identity.set_edits({"age": 1.0})
    warp = WarpRecaster(casts)
    assert warp.cast_ids() == ["hopper", "liveportrait_s42"]
    with pytest.raises(CastError):
        warp.assign(1, "nobody")
    mine = warp.session_copy()
    mine.assign(1, "liveportrait_s42")
    assert mine.cast_for(1) == "liveportrait_s42" and warp.cast_for(1) == "hopper"
    both = ByCastRecaster(warp.session_copy(), {"actor": IdentityRecaster()})
    assert both.cast_ids() == ["actor", "hopper", "liveportrait_s42"] and both.edit_names() == []
    both.assign(1, "actor")
    copy = both.session_copy()
    copy.assign(1, "hopper")
    assert both._for(1) is both.engines["actor"] and copy._for(1) is copy.casts


def test_control_budget_allows_the_rate_and_ends_a_flood() -> None:
    """A token bucket per session: a burst passes, then the rate; the first message over it is refused (answered
    `rate_limited`), the next are dropped unanswered, and CONTROL_FLOOD over the rate (leaking at the rate) end the
    session, even when the flood is paced so that some messages pass."""
    now = [0.0]
    budget = ControlBudget(rate=10, burst=20, flood=50, clock=lambda: now[0])
    assert [budget.take() for _ in range(20)] == ["ok"] * 20
    assert budget.take() == "refuse"
    assert budget.take() == "drop"
    now[0] += 0.5  # 5 tokens back; the 2 messages over the rate leaked away
    assert [budget.take() for _ in range(5)] == ["ok"] * 5
    assert budget.take() == "refuse"  # a new run over the rate is answered once again
    now[0] += 10.0  # a quiet spell refills the bucket to its burst, no more
    assert [budget.take() for _ in range(21)] == ["ok"] * 20 + ["refuse"]
    verdicts = []
    for _ in range(100):  # 200 messages a second, 20 times the rate: some pass, the flood still ends the session
        now[0] += 0.005
        verdicts.append(budget.take())
    assert "flood" in verdicts and "ok" in verdicts[:verdicts.index("flood")]
    assert 50 <= verdicts.index("flood") <= 60  # 50 over the rate, less 10 a second leaked
