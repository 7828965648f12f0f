"""The command line: the main job on embedded defaults, track files, exit codes on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stream.cli.main import main
from stream.media.sources import probe
from tests.conftest import decode_all, media, psnr


def test_demo_renders_a_visible_recast(tmp_path: Path) -> None:
    out = tmp_path / "demo.mp4"
    assert main(["render", "--demo", "-o", str(out)]) == 0
    from stream.cli.demo_title import demo_title_path

    src, got = decode_all(demo_title_path()), decode_all(out)
    assert len(got) == len(src) == 150
    # a visible difference: the face region changed a lot, the frame as a whole only there
    diffs = [np.abs(a.astype(int) - b).mean(axis=2) for a, b in zip(src, got, strict=True)]
    assert np.mean([(d > 30).mean() for d in diffs]) > 0.01
    assert np.mean([psnr(a, b) for a, b in zip(src, got, strict=True)]) < 35
    info = probe(out)
    assert info["metadata"]["recast"] == "1" and info["audio_codec"] == "aac"
    assert [c["id"] for c in json.loads(info["metadata"]["recast_casts"])] == ["hopper"]


def test_track_command_writes_the_track_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.json"
    code = main(["track", str(media("videos/liveportrait_d0.mp4")), "--out", str(out), "--mode", "live",
                 "--detect-interval", "5"])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["mode"] == "live" and data["frame_count"] == 78 and data["width"] == 512
    assert data["tracks"][0]["first"] == 0 and data["tracks"][0]["last"] == 77
    assert "jitter" in capsys.readouterr().out


def test_render_from_track_file(tmp_path: Path) -> None:
    tracks = tmp_path / "t.json"
    assert main(["track", str(media("videos/liveportrait_d0.mp4")), "--out", str(tracks)]) == 0
    out = tmp_path / "o.mp4"
    assert main(["render", str(media("videos/liveportrait_d0.mp4")), "--tracks", str(tracks), "--engine",
                 "identity", "-o", str(out)]) == 0
    assert probe(out)["frames"] == 78


def test_the_default_cast_is_never_the_sample_titles_own_face(tmp_path: Path) -> None:
    """Without --cast a video is recast with Eileen Collins; the sample title, which animates her portrait, with
    Grace Hopper (test_demo_renders_a_visible_recast)."""
    out = tmp_path / "o.mp4"
    assert main(["render", str(media("videos/liveportrait_d0.mp4")), "-o", str(out)]) == 0
    assert [c["id"] for c in json.loads(probe(out)["metadata"]["recast_casts"])] == ["collins"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["render", "{tmp}/absent.mp4", "-o", "{tmp}/o.mp4"], "absent.mp4: no such file"),
        (["render", "{tmp}/garbage.mp4", "-o", "{tmp}/o.mp4"], "garbage.mp4: cannot open"),
        (["render", "{d0}", "-o", "{tmp}/o.mp4", "--cast", "{tmp}/garbage.mp4"], "garbage.mp4: not a readable"),
        (["render", "{d0}", "-o", "{tmp}/o.mp4", "--cast", "{tmp}/blank.png"], "blank.png: no face"),
        (["render", "{d0}", "-o", "{tmp}/o.avi"], "o.avi: output must be"),
        (["render", "-o", "{tmp}/o.mp4"], "exactly one of INPUT or --demo"),
        (["render", "{d0}", "-o", "{tmp}/nodir/o.mp4"], "output folder does not exist"),
        (["render", "{d0}", "--tracks", "{tmp}/garbage.mp4", "-o", "{tmp}/o.mp4"], "not a Recast track file"),
        (["track", "{tmp}", "--out", "{tmp}/t.json"], "is a directory"),
        (["render", "{d0}", "--tracks", "{tmp}/deep.json", "-o", "{tmp}/o.mp4"], "deep.json: not a Recast track file"),
        (["checkpoint", "{tmp}/garbage.mp4", "--config", "{tmp}/deep.json"], "deep.json: not a readable JSON config"),
    ],
)
def test_bad_input_exits_2_with_a_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                         needle: str) -> None:
    (tmp_path / "garbage.mp4").write_bytes(b"\x00garbage" * 100)
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)  # past the JSON parser's recursion limit
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), (180, 140, 120), np.uint8)).save(tmp_path / "blank.png")  # colour, no face
    argv = [a.format(tmp=tmp_path, d0=media("videos/liveportrait_d0.mp4")) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_console_script_bad_usage() -> None:
    proc = subprocess.run([sys.executable, "-m", "stream.cli", "render", "x.mp4", "-o", "y.mp4",
                           "--detect-interval", "0"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "detect-interval" in proc.stderr


@pytest.mark.parametrize("command", ["track", "render"])
def test_truncated_file_exits_2_with_one_line(tmp_path: Path, command: str) -> None:
    """A file cut inside its first frames (the header and a broken packet remain): exit 2 and one line on stderr,
    as the contract says, not a warning per corrupt packet before it. Run as a process, so that the CLI's own
    logging set-up is what writes stderr."""
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(media("videos/liveportrait_d20.mp4").read_bytes()[:20000])
    out = ["--out", str(tmp_path / "t.json")] if command == "track" else ["-o", str(tmp_path / "o.mp4")]
    proc = subprocess.run([sys.executable, "-m", "stream.cli", command, str(cut), *out], capture_output=True,
                          text=True, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "cut.mp4: no video frame could be decoded" in lines[0]


def test_the_callers_mistakes_are_one_family_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Every layer's error for a bad file, option or input derives from engines.errors.InputError, which the
    command line turns into one line and exit 2, whatever module raised it (a missing MediaPipe model here)."""
    import importlib

    from engines.errors import InputError

    family = {"engines.cache": "CacheError", "engines.checkpoints": "CheckpointError",
              "engines.directions": "DirectionError", "engines.parity": "ParityError",
              "engines.runtime": "EngineError", "export.bake": "BakeError", "stream.cli.bake": "BakeUsageError",
              "stream.casts.cast": "CastImageError", "stream.cli.options": "UsageError",
              "stream.perception.hog": "ModelNotFound", "stream.media.sources": "MediaError",
              "stream.perception.model_files": "ModelMissing", "stream.casts.preparation": "CastError",
              "stream.cli.survey": "SurveyError"}
    for module, name in family.items():
        assert issubclass(getattr(importlib.import_module(module), name), InputError), (module, name)
    monkeypatch.setenv("RECAST_MEDIAPIPE", str(tmp_path))  # an empty folder: no models there
    assert main(["track", str(media("videos/liveportrait_d20.mp4")), "--out", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "make install" in err[0] and "Traceback" not in err[0], err


@pytest.mark.parametrize("keys", ["/dev/zero", "latin1", "missing"])
def test_a_bad_api_keys_file_is_one_line_and_exit_2(keys: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`recast serve --api-keys-file`: a device read without end, a file that is not UTF-8 text, a missing file:
    each is one line naming the file, exit 2, before anything is served."""
    path = Path(keys) if keys.startswith("/") else tmp_path / "keys.txt"
    if keys == "latin1":
        path.write_bytes("clé-de-test-très-longue\n".encode("latin-1"))
    assert main(["serve", "--api-keys-file", str(path), "--port", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "Traceback" not in err[0], err
