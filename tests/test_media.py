"""Media in and out: timestamps, frame count, rate, duration and audio kept; bad files refused clearly."""

from __future__ import annotations

import hashlib
import itertools
import shutil
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from stream.media.sinks import MediaSink, yuv420_frame
from stream.media.sources import MediaError, MediaSource, probe
from tests.conftest import decode_all, media, psnr


def copy_through(src: Path | str, out: Path) -> MediaSource:
    source = MediaSource(src)
    with MediaSink(out, source.info, audio_stream=source.audio_stream) as sink:
        for frame in source.frames():
            sink.write(frame)
            sink.write_audio(source.audio_packets, until=frame.time + 0.5)
        sink.write_audio(source.audio_packets)
    source.close()
    return source


def audio_payloads(path: Path) -> list[tuple[int | None, str]]:
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        return [(p.pts, hashlib.sha256(bytes(p)).hexdigest()) for p in c.demux(stream) if p.size]


def test_hamilton_offset_audio_and_frames_kept(tmp_path: Path) -> None:
    src = media("videos/face_recognition_short_hamilton_clip.mp4")
    out = tmp_path / "copy.mp4"
    copy_through(src, out)
    a, b = probe(src), probe(out)
    assert b["frames"] == a["frames"] == 275
    assert b["fps"] == pytest.approx(a["fps"], abs=1e-3)
    assert b["duration"] == pytest.approx(a["duration"], abs=0.05)
    # the video starts 0.852 s after the audio; the output keeps the offset (within one frame)
    assert b["video_start"] == pytest.approx(0.852, abs=1 / 30)
    assert b["audio_start"] == pytest.approx(a["audio_start"], abs=1e-3)
    # audio is copied bit for bit, packet for packet
    assert audio_payloads(out) == audio_payloads(src)


def test_timestamps_kept_frame_by_frame(tmp_path: Path) -> None:
    src = media("videos/liveportrait_d20.mp4")
    out = tmp_path / "copy.mp4"
    copy_through(src, out)
    with av.open(str(src)) as c:
        times_in = [float(f.pts * f.time_base) for f in c.decode(video=0)]
    with av.open(str(out)) as c:
        times_out = [float(f.pts * f.time_base) for f in c.decode(video=0)]
    assert len(times_out) == len(times_in) == 175
    np.testing.assert_allclose(times_out, times_in, atol=1e-3)
    # pixels: only encoding noise
    assert np.mean([psnr(x, y) for x, y in zip(decode_all(src)[::25], decode_all(out)[::25], strict=True)]) > 38


def test_no_audio_stays_without_audio(tmp_path: Path) -> None:
    out = tmp_path / "copy.mp4"
    source = copy_through(media("videos/liveportrait_d0.mp4"), out)
    assert not source.info.has_audio
    info = probe(out)
    assert info["audio_codec"] is None and info["frames"] == 78


def test_variable_frame_rate_kept(tmp_path: Path, make_video: Callable[..., Path]) -> None:
    rng = np.random.default_rng(1)
    frames = [np.full((64, 96, 3), 40 + 5 * i, np.uint8) for i in range(30)]
    steps = rng.choice([1, 2, 3], size=30)  # 1/30 s, 2/30 s or 3/30 s between frames
    pts = np.cumsum(steps) - steps[0]
    src = make_video("vfr.mp4", frames, pts=[int(p) for p in pts], time_base=Fraction(1, 30), rate=30)
    out = tmp_path / "copy.mp4"
    copy_through(src, out)
    with av.open(str(out)) as c:
        got = [float(f.pts * f.time_base) for f in c.decode(video=0)]
    np.testing.assert_allclose(got, pts / 30, atol=1e-3)


def test_odd_frame_size_is_padded_to_even(tmp_path: Path, make_video: Callable[..., Path]) -> None:
    frames = [np.full((121, 161, 3), 30 + 4 * i, np.uint8) for i in range(12)]
    src = make_video("odd.mp4", frames)
    source = MediaSource(src)
    assert (source.info.width, source.info.height) == (161, 121)
    source.close()
    out = tmp_path / "copy.mp4"
    copy_through(src, out)
    info = probe(out)
    assert (info["width"], info["height"]) == (162, 122)
    assert info["frames"] == 12


def test_pictures_go_to_the_encoder_in_ffmpegs_own_colours() -> None:
    """An RGB picture converted for the encoder by OpenCV (`yuv420_frame`) is the one FFmpeg's own conversion makes:
    luma within a level, chroma within two (its subsampling filter), and back to RGB alike; odd sides padded."""
    with MediaSource(media("videos/liveportrait_d20.mp4")) as source:
        image = next(iter(source.frames())).image
    for picture in (image, np.ascontiguousarray(image[:301, :199])):
        ours = yuv420_frame(picture)
        theirs = av.VideoFrame.from_ndarray(np.pad(picture, ((0, picture.shape[0] % 2), (0, picture.shape[1] % 2),
                                                             (0, 0)), mode="edge"), format="rgb24")
        theirs = theirs.reformat(format="yuv420p")
        assert (ours.width, ours.height) == (theirs.width, theirs.height) == (picture.shape[1] + picture.shape[1] % 2,
                                                                              picture.shape[0] + picture.shape[0] % 2)
        a, b = (frame.to_ndarray().astype(np.int16) for frame in (ours, theirs))
        luma = ours.height
        assert np.abs(a[:luma] - b[:luma]).max() <= 1 and np.abs(a[luma:] - b[luma:]).max() <= 2
        back = ours.to_ndarray(format="rgb24")[:picture.shape[0], :picture.shape[1]]
        assert psnr(picture, back) > 35.0  # 4:2:0 costs the colour's finest detail, nothing more


def test_truncated_file_yields_what_it_has(tmp_path: Path) -> None:
    src = media("videos/liveportrait_s18.mp4")
    cut = tmp_path / "truncated.mp4"
    data = src.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with MediaSource(cut) as source:
        count = sum(1 for _ in source.frames())
    assert 0 < count < 282


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.mp4", b"", "empty file"),
        ("noise.mp4", bytes(np.random.default_rng(0).integers(0, 255, 20000, dtype=np.uint8)), "cannot open"),
        ("text.mp4", b"this is not a video\n" * 50, "cannot open"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MediaError) as err, MediaSource(path) as source:
        list(source.frames())
    assert str(path) in str(err.value) and reason in str(err.value)


def test_missing_file_directory_and_audio_only(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="no such file"):
        MediaSource(tmp_path / "absent.mp4")
    with pytest.raises(MediaError, match="directory"):
        MediaSource(tmp_path)
    audio_only = tmp_path / "audio.m4a"
    with av.open(str(audio_only), "w", format="mp4") as c:
        a = c.add_stream("aac", rate=44100, layout="mono")
        af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        af.sample_rate, af.pts = 44100, 0
        c.mux(a.encode(af))
        c.mux(a.encode(None))
    with pytest.raises(MediaError, match="no video stream"):
        MediaSource(audio_only)


def test_corrupt_middle_is_skipped_not_fatal(tmp_path: Path) -> None:
    src = media("videos/liveportrait_d20.mp4")
    damaged = tmp_path / "damaged.mp4"
    shutil.copy(src, damaged)
    data = bytearray(damaged.read_bytes())
    rng = np.random.default_rng(3)
    start = len(data) // 2
    data[start:start + 4000] = rng.integers(0, 255, 4000, dtype=np.uint8).tobytes()
    damaged.write_bytes(bytes(data))
    with MediaSource(damaged) as source:
        count = sum(1 for _ in source.frames())
    assert count > 100  # most of the 175 frames still decode


def test_unwritable_output_is_a_clear_error(tmp_path: Path) -> None:
    with MediaSource(media("videos/liveportrait_d0.mp4")) as source, pytest.raises(MediaError, match="folder"):
        MediaSink(tmp_path / "missing" / "out.mp4", source.info)


def test_http_url_source(tmp_path: Path) -> None:
    """PyAV reads a URL: a clip served over HTTP on 127.0.0.1 decodes fully, with its audio."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(media("videos/liveportrait_d20.mp4").parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/liveportrait_d20.mp4"
        out = tmp_path / "from-url.mp4"
        with MediaSource(url) as source:
            assert source.info.has_audio and source.info.width == 480
        copy_through(url, out)
        assert probe(out)["frames"] == 175
        with pytest.raises(MediaError, match="cannot open"):
            MediaSource(f"http://127.0.0.1:{server.server_address[1]}/absent.mp4")
    finally:
        server.shutdown()


@pytest.mark.parametrize("name", ["liveportrait_s18.mp4", "face_recognition_short_hamilton_clip.mp4"])
def test_frames_from_a_start_seek_and_match_a_decode_from_the_beginning(name: str) -> None:
    """s18 (B-frames, one keyframe) and hamilton (a keyframe every 60 frames or less, so the seek lands between
    them): a start anywhere yields that frame, numbered as a decode from the first frame numbers it, the same
    picture, and the frame after it."""
    clip = media(f"videos/{name}")
    with MediaSource(clip, keep_audio=False) as source:
        every = [(f.index, f.time, f.image[::16, ::16].copy()) for f in source.frames()]
    for start in (1, 37, 61, 200, len(every) - 2):
        with MediaSource(clip, keep_audio=False) as source:
            got = list(itertools.islice(source.frames(start=(start, every[start][1])), 2))
        for frame, (index, time_s, image) in zip(got, every[start:start + 2], strict=True):
            assert frame.index == index and abs(frame.time - time_s) < 1e-6, (start, frame.index, frame.time)
            assert np.array_equal(frame.image[::16, ::16], image), start
