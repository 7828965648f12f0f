"""`recast bake --renditions` (export/renditions.py) on a real clip: the original and a recast per cast as H.264
streams a relay can switch between at any keyframe (keyframes on the same frames in every rendition, at most
0.5 s apart, parameter sets on every one, no B-frames), the recast picture the bake's tracks draw, the audio as
Opus, the cache's checksums, and the refusals."""

from __future__ import annotations

import fractions
import json
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from engines.cache import TitleCache
from export.renditions import StreamIndex, baked_frames, cast_recaster, rendition_casts
from stream.cli.main import main
from stream.media.watermark import read_frames
from stream.perception.baked_title import BakedTitle
from tests.conftest import decoded_h264, media, psnr

CLIP = media("videos/liveportrait_d20.mp4")  # 480x480, 25 fps, with audio
FRAMES = 40


def _bake(cache: Path, registry: Path, *extra: str) -> int:
    return main(["bake", str(CLIP), "--title", "d20", "--cache", str(cache), "--max-frames", str(FRAMES),
                 "--casts", str(registry), *extra])


@pytest.fixture(scope="module")
def baked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    cache, registry = tmp_path_factory.mktemp("cache"), tmp_path_factory.mktemp("casts")
    assert _bake(cache, registry, "--renditions", "collins") == 0
    return cache, registry


def _folder(cache: Path) -> Path:
    return cache / "titles" / "d20"


def _nal_types(packet: bytes) -> list[int]:
    """The NAL unit types of an Annex-B packet."""
    return [packet[i + 3] & 0x1F for i in range(len(packet) - 3) if packet[i:i + 3] == b"\x00\x00\x01"]


def test_renditions_switch_at_the_same_keyframes_and_carry_their_headers(baked: tuple[Path, Path]) -> None:
    cache, _ = baked
    manifest = json.loads((_folder(cache) / "manifest.json").read_text())
    stage = manifest["stages"]["renditions"]
    names = ["original", "cast-collins"]
    for name in names:
        assert f"renditions/{name}.h264" in manifest["files"] and f"renditions/{name}.index.npz" in stage["files"]
    assert stage["info"]["gop_frames"] == 12  # 0.5 s at 25 fps
    indexes = {n: StreamIndex.load(_folder(cache) / f"renditions/{n}.index.npz") for n in names}
    for name, index in indexes.items():
        assert len(index) == FRAMES, name
        assert list(np.flatnonzero(index.keyframes)) == [0, 12, 24, 36], name
        assert np.all(np.diff(index.times) > 0)  # one packet a frame, in display order: no B-frames
        data = (_folder(cache) / f"renditions/{name}.h264").read_bytes()
        assert len(data) == int(index.sizes.sum())
        for i in range(len(index)):
            types = _nal_types(data[index.offsets[i]:index.offsets[i] + index.sizes[i]])
            if index.keyframes[i]:
                assert {7, 8, 5} <= set(types), (name, i, types)  # SPS, PPS, an IDR slice
            else:
                assert 5 not in types and 1 in types, (name, i, types)
    assert np.array_equal(indexes["original"].times, indexes["cast-collins"].times)


def test_a_cast_rendition_is_what_the_bake_draws_and_the_original_is_the_source(baked: tuple[Path, Path]) -> None:
    """Frame for frame against the pictures the bake's tracks draw (the warp, the badge, the invisible mark): only
    the encoder's loss. The mark is in every frame of the cast rendition and in none of the original."""
    cache, registry = baked
    title = BakedTitle(TitleCache(cache), "d20")
    collins = rendition_casts(["collins"], str(registry), "mediapipe")[0]
    drawn = [image for _, image in baked_frames(CLIP, title.tracks, cast_recaster(collins, "mediapipe"),
                                                mark_id="title:d20")]
    source = [image for _, image in baked_frames(CLIP, title.tracks, None)]
    recast = decoded_h264(_folder(cache) / "renditions/cast-collins.h264")
    original = decoded_h264(_folder(cache) / "renditions/original.h264")
    assert len(recast) == len(original) == len(drawn) == FRAMES
    scores = [psnr(a, b) for a, b in zip(recast, drawn, strict=True)]
    print(f"cast rendition against the drawn frames: {min(scores):.1f}-{max(scores):.1f} dB")
    assert min(scores) > 33  # x264 at crf 23: the encoder's loss, no other difference
    assert min(psnr(a, b) for a, b in zip(original, source, strict=True)) > 33
    assert min(psnr(a, b) for a, b in zip(recast, source, strict=True)) < 30  # and it is a recast
    assert all(v.marked for v in read_frames(recast)[0]) and not any(v.marked for v in read_frames(original)[0])


def test_the_audio_is_opus_once_for_every_rendition(baked: tuple[Path, Path]) -> None:
    cache, _ = baked
    index = StreamIndex.load(_folder(cache) / "renditions/audio.index.npz")
    data = (_folder(cache) / "renditions/audio.opus").read_bytes()
    decoder = av.CodecContext.create("libopus", "r")
    decoder.sample_rate, decoder.layout = 48000, "stereo"
    samples = 0
    for offset, size in zip(index.offsets, index.sizes, strict=True):
        for frame in decoder.decode(av.Packet(data[offset:offset + size])):
            samples += frame.samples
    seconds = samples / 48000
    assert abs(seconds - FRAMES / 25) < 0.1, seconds  # the baked frames' span, in 20 ms packets


def test_a_second_bake_is_a_cache_hit_and_an_edited_rendition_is_rebuilt(baked: tuple[Path, Path],
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    cache, registry = baked
    entry = TitleCache(cache).entry("d20")
    assert entry.stage("renditions") is not None
    before = (_folder(cache) / "renditions/cast-collins.h264").read_bytes()
    assert _bake(cache, registry, "--renditions", "collins") == 0
    assert json.loads((_folder(cache) / "manifest.json").read_text())["stages"]["renditions"]["key"] == \
        entry.stage("renditions").key  # type: ignore[union-attr]
    edited = bytearray(before)
    edited[len(edited) // 2] ^= 0xFF
    (_folder(cache) / "renditions/cast-collins.h264").write_bytes(bytes(edited))
    assert _bake(cache, registry, "--renditions", "collins") == 0
    assert any("checksum mismatch" in r.message and "cast-collins.h264" in r.message for r in caplog.records)
    assert (_folder(cache) / "renditions/cast-collins.h264").read_bytes() != bytes(edited)
    assert TitleCache(cache).entry("d20").verified("renditions/cast-collins.h264")  # rebuilt, and recorded


def test_an_unknown_cast_is_refused_before_any_work(baked: tuple[Path, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    _, registry = baked
    assert _bake(tmp_path / "cache", registry, "--renditions", "nobody") == 2
    err = capsys.readouterr().err
    assert "no cast 'nobody'" in err and "collins" in err
    assert not (tmp_path / "cache" / "titles" / "d20" / "renditions").exists()


def _scaled(source: Path, out: Path, width: int, height: int, frames: int) -> Path:
    """The first `frames` of a clip at another size, without audio."""
    with av.open(str(source)) as src, av.open(str(out), "w") as dst:
        stream = dst.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"  # 4:4:4 takes odd sides
        for index, frame in enumerate(src.decode(video=0)):
            if index >= frames:
                break
            small = frame.reformat(width=width, height=height, format="yuv444p")
            small.pts, small.time_base = index, fractions.Fraction(1, 25)
            dst.mux(stream.encode(small))
        dst.mux(stream.encode(None))
    return out


def test_an_odd_sized_source_without_audio_is_padded_as_a_render_is(tmp_path: Path) -> None:
    """241x239 without audio: renditions 242x240 (the last row and column repeated, as `recast render` pads), no
    audio stream, and a relay that opens them."""
    from stream.server.relay import TitleRenditions

    clip = _scaled(CLIP, tmp_path / "odd.mp4", 241, 239, 20)
    assert main(["bake", str(clip), "--title", "odd", "--cache", str(tmp_path / "cache"),
                 "--casts", str(tmp_path / "casts"), "--renditions", "hopper"]) == 0
    folder = tmp_path / "cache" / "titles" / "odd"
    files = json.loads((folder / "manifest.json").read_text())["stages"]["renditions"]["files"]
    assert not any("audio" in rel for rel in files)
    with av.open(str(clip)) as container:
        source = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    original = decoded_h264(folder / "renditions/original.h264")
    assert len(original) == len(source) == 20 and original[0].shape == (240, 242, 3)
    assert min(psnr(a[:239, :241], b) for a, b in zip(original, source, strict=True)) > 33
    assert np.abs(original[5][:, 241].astype(int) - original[5][:, 240]).mean() < 3  # padding repeats the edge
    renditions = TitleRenditions.open(TitleCache(tmp_path / "cache").entry("odd"))
    assert renditions is not None and renditions.audio is None and renditions.frames == 20


def test_a_bake_killed_while_writing_renditions_leaves_none_and_the_next_bake_makes_them(tmp_path: Path) -> None:
    """SIGKILL while the cast's rendition is written (the original's is on disk): no renditions stage, so no
    relay; what the killed bake left is removed and the next bake makes every rendition."""
    from stream.server.relay import TitleRenditions

    cache, registry = tmp_path / "cache", tmp_path / "casts"
    folder = cache / "titles" / "d20"
    command = [sys.executable, "-m", "stream.cli", "bake", str(CLIP), "--title", "d20", "--cache", str(cache),
               "--casts", str(registry), "--max-frames", "150", "--renditions", "hopper"]
    bake = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not list((folder / "renditions").glob(".cast-hopper.h264.*.tmp")):
            assert bake.poll() is None, "the bake ended before it was killed"
            assert time.monotonic() < deadline, "the bake never wrote the cast's rendition"
            time.sleep(0.02)
        bake.kill()
    finally:
        bake.wait()
    assert (folder / "renditions/original.h264").exists()
    entry = TitleCache(cache).entry("d20")
    assert entry.stage("tracks") is not None and entry.stage("renditions") is None
    assert TitleRenditions.open(entry) is None
    assert main(command[3:]) == 0
    entry = TitleCache(cache).entry("d20")
    assert entry.stage("renditions") is not None
    assert not list(folder.rglob(".*.tmp"))
    renditions = TitleRenditions.open(entry)
    assert renditions is not None and set(renditions.video) == {"original", "cast-hopper"}
    assert renditions.frames == 150
