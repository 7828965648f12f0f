"""``recast``: the command line (DESIGN.md 3.1).

Exit status: 0 on success, 2 on bad usage or bad input (one line on stderr naming the file and the
problem), 1 on an internal failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engines.errors import InputError
from engines.formats import RUNTIMES
from stream.casts.cast import Cast, default_casts
from stream.casts.registry import CastRegistry, default_registry
from stream.cli.bake import BAKE_COMMANDS, add_bake_commands
from stream.cli.casts import CASTS_COMMANDS, add_casts_commands, casts_for
from stream.cli.engines import ENGINE_COMMANDS, add_engine_commands
from stream.cli.options import UsageError, add_detector_option, demo_location, positive, progress_bar
from stream.cli.serve import cmd_serve
from stream.cli.verify import add_verify_command, cmd_verify
from stream.media.sources import MediaSource, is_live, is_url
from stream.recasters.contract import Recaster
from stream.recasters.factory import make_recaster
from stream.server.encoding import ENCODINGS

log = logging.getLogger("recast")
ENGINES = ("identity", "warp", "stylegan", "fomm")


def _span(text: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    if not (first.isdigit() and last.isdigit()) or int(first) > int(last):
        raise argparse.ArgumentTypeError(f"expected A-B with A <= B, got {text!r}")
    return int(first), int(last)


def _add_threads_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=positive, default=2, metavar="N",
                   help="mediapipe: threads of each LiteRT model (the service gives each session one)")


def _add_tracking_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=("offline", "live"), default="offline",
                   help="offline: Gaussian smoothing over whole track segments (two passes); "
                        "live: causal, 4-frame look-ahead (one pass)")
    add_detector_option(p)
    _add_threads_option(p)
    p.add_argument("--tiles", type=int, default=2, choices=range(5), metavar="0..4",
                   help="mediapipe: tile columns searched besides the whole frame, for small faces")
    p.add_argument("--max-faces", type=positive, default=16, metavar="N",
                   help="faces tracked and recast per frame at most, the largest first")
    p.add_argument("--detect-interval", type=positive, default=10, metavar="N",
                   help="run the face detector every N frames (also after a cut and when a track is lost)")
    p.add_argument("--detect-width", type=int, default=640, metavar="PX",
                   help="width the frame is scaled down to for detection (0: full frame)")
    p.add_argument("--upsample", type=int, default=0, choices=(0, 1, 2),
                   help="dlib detector upsampling (finds smaller faces, slower)")
    p.add_argument("--lookahead", type=int, default=4, choices=range(5), metavar="0..4",
                   help="live mode: frames the smoother may look ahead (each adds one frame of latency)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recast", description="Streaming face recast: track, render, bench.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    track = sub.add_parser("track", help="track faces and write the track file (JSON)")
    track.add_argument("input", help="video file or URL")
    track.add_argument("--out", required=True, help="track file to write (.json)")
    track.add_argument("--crops", metavar="DIR", help="also export aligned face crops (PNG) for training")
    track.add_argument("--crop-size", type=int, default=64, metavar="PX", help="size of the exported crops")
    track.add_argument("--crop-every", type=positive, default=1, metavar="N", help="export every N-th face")
    _add_tracking_options(track)

    rend = sub.add_parser("render", help="render a recast copy of a video (mp4, audio kept)")
    rend.add_argument("input", nargs="?", help="video file or URL")
    rend.add_argument("--demo", action="store_true", help="render the built-in sample title")
    rend.add_argument("-o", "--output", required=True, help="output .mp4")
    rend.add_argument("--engine", choices=ENGINES, default="warp")
    rend.add_argument("--cast", action="append", default=[], metavar="IMAGE|ID",
                      help="cast portrait, or a registered cast's id (repeat for several faces; default: the "
                           "built-in cast)")
    rend.add_argument("--casts", metavar="DIR", help="the cast registry --cast ids are read from")
    rend.add_argument("--tracks", metavar="TRACKS.json", help="use a track file from `recast track` (offline)")
    rend.add_argument("--title", help="baked title id (needs --cache): its cached tracks, no detection")
    rend.add_argument("--cache", help="title cache folder")
    rend.add_argument("--fomm", metavar="CHECKPOINT", help="fomm: the FOMM checkpoint (vox-cpk.pth.tar or ours)")
    rend.add_argument("--edit", action="append", default=[], metavar="NAME=FACTOR",
                      help="stylegan: apply a direction (repeatable), e.g. age=2")
    rend.add_argument("--directions", metavar="DIR", help="stylegan: folder of direction files for --edit")
    rend.add_argument("--device", default="cpu", help="stylegan/fomm: torch device")
    rend.add_argument("--runtime", choices=RUNTIMES, default="torch",
                      help="stylegan: run the baked generator eagerly, or its exported ONNX file or TensorRT plan")
    rend.add_argument("--no-badge", action="store_true", help="leave out the visible provenance badge")
    rend.add_argument("--sign-cert", metavar="CHAIN.pem",
                      help="sign the output's Content Credentials (C2PA) with this certificate chain (the signer's "
                           "first; also RECAST_SIGN_CERT); with --sign-key")
    rend.add_argument("--sign-key", metavar="KEY.pem", help="the chain's private key (PEM; also RECAST_SIGN_KEY)")
    _add_occlusion_option(rend)
    rend.add_argument("--no-color-match", action="store_true",
                      help="warp: paste the cast's own colours instead of matching the actor's skin")
    _add_tracking_options(rend)

    add_verify_command(sub)

    bench = sub.add_parser("bench", help="measure per-stage cost and the real-time factor")
    bench.add_argument("input", nargs="?", help="video file (default: the sample title)")
    bench.add_argument("--engine", choices=("identity", "warp"), default="warp")
    bench.add_argument("--cast", action="append", default=[], metavar="IMAGE")
    bench.add_argument("--json", metavar="OUT.json", help="also write the figures as JSON")
    bench.add_argument("--repeats", type=positive, default=2)
    bench.add_argument("--detect-interval", type=positive, default=10, metavar="N")
    add_detector_option(bench)
    _add_threads_option(bench)
    bench.add_argument("--frames", type=_span, metavar="A-B",
                       help="live: time tracking on frames A to B only (e.g. the hamilton audience shot, 211-274)")
    bench.add_argument("--only", choices=("live", "engines", "bake", "quality", "relay", "channel", "provenance"),
                       help="live: the live path and tracking; engines: StyleGAN2, FOMM and e4e, eager against "
                            "ONNX Runtime, and ONNX round trips; bake: a bake's stages and baked playback against "
                            "live tracking (default: these three); quality: render clips (--clip, or the input) "
                            "and score the recast's look against the first cast (stream/cli/quality.py); relay: "
                            "the input's first 8 s baked with renditions and served, viewers relayed against one "
                            "live viewer (CPU and memory per viewer, viewers a core, the toggle's delay); "
                            "channel: the input published over WHIP to a live channel, 1 and then --viewers WHEP "
                            "players of one cast (the server's CPU for each, the trip from publisher to player); "
                            "provenance: the input (or --clip) recast, the invisible mark read back after each "
                            "attack (H.264 and VP8 at 500 kbit/s, half size, a crop, a capture), its cost, and "
                            "false positives on unrecast clips (--unmarked, default: the videos beside the input)")
    bench.add_argument("--viewers", type=positive, default=10, help="relay, channel: viewers at once")
    bench.add_argument("--seconds", type=float, default=10.0,
                       help="relay, channel: seconds each round of viewers watches")
    bench.add_argument("--clip", action="append", default=[], metavar="VIDEO",
                       help="quality: a clip to render and score (repeatable)")
    bench.add_argument("--unmarked", action="append", default=[], metavar="VIDEO",
                       help="provenance: an unrecast clip to read for false positives (repeatable)")
    bench.add_argument("--floor", action="store_true",
                       help="quality: also score each clip passed through unchanged (the identity recaster): what "
                            "the pipeline alone costs, the floor of nme and flicker")
    bench.add_argument("--generator", metavar="G", help="bake: StyleGAN2 checkpoint (default: small built-in models)")
    bench.add_argument("--encoder", metavar="E4E", help="bake: e4e checkpoint (with --generator)")
    bench.add_argument("--encoder-size", type=positive, default=256, help="bake: the encoder's input size")
    bench.add_argument("--pti-steps", type=positive, default=50, help="bake: PTI steps")
    bench.add_argument("--device", default="cpu", help="engines: also time this torch device (cuda, fp32 and fp16)")
    serve = sub.add_parser("serve", help="the playback service: WebRTC preview sessions with the recast toggle")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--titles", metavar="DIR", help="folder of titles (video files; the file stem is the id)")
    serve.add_argument("--cache", metavar="DIR",
                       help="title cache: its baked titles play from their cached tracks (see recast bake)")
    serve.add_argument("--directions", metavar="DIR",
                       help="direction files (.npy STIT, .pt InterFaceGAN) for the edit sliders of StyleGAN bakes")
    serve.add_argument("--device", default="cpu", help="torch device of the baked titles' tuned generators")
    serve.add_argument("--runtime", choices=RUNTIMES, default="torch",
                       help="the baked titles' tuned generators: eager, or their exported ONNX files / plans")
    serve.add_argument("--video-encoder", choices=ENCODINGS, default="auto",
                       help="libx264, h264_nvenc (H.264), libvpx (VP8): the session encodes through PyAV, following "
                            "the viewer's bandwidth, and aiortc sends the packets as they are (an offer without "
                            "the codec gets the other one); webrtc: aiortc encodes, in the codec the viewer "
                            "prefers; auto (the default): h264_nvenc where it opens (an NVIDIA GPU with NVENC), "
                            "else libx264")
    serve.add_argument("--demo", action="store_true", help="serve the sample title (played on repeat) and cast")
    serve.add_argument("--loop", action="store_true",
                       help="play every title on repeat (else a session ends with its title, the viewer told)")
    serve.add_argument("--ice-host", action="append", metavar="ADDR",
                       help="gather ICE host candidates on this address only (repeatable; tests use 127.0.0.1)")
    serve.add_argument("--api-keys-file", metavar="FILE",
                       help="API keys, one per line (also RECAST_API_KEYS, comma-separated)")
    serve.add_argument("--publish-keys-file", metavar="FILE",
                       help="keys that may publish live channels over WHIP, one per line (also RECAST_PUBLISH_KEYS, "
                            "comma-separated); viewing keys cannot publish, publish keys cannot view")
    serve.add_argument("--max-sessions", type=positive, default=8, help="sessions the whole service holds")
    serve.add_argument("--workers", type=int, default=None, metavar="N",
                       help="session worker processes behind the gateway (default: 1.5 a core, about the sessions a "
                            "machine holds, at most --max-sessions; 0: sessions in "
                            "the server's own process, no gateway)")
    serve.add_argument("--ray-address", metavar="ADDR",
                       help="place the session workers as Ray actors on this cluster (e.g. auto, or HOST:6379)")
    serve.add_argument("--drain-s", type=float, default=30.0, metavar="S",
                       help="on SIGTERM, how long running sessions may go on before they are ended")
    serve.add_argument("--fleet-record", metavar="FILE",
                       help="where the gateway keeps its workers' record for the next gateway to adopt them "
                            "(default: the cache's fleet/gateway-PORT.json)")
    serve.add_argument("--sessions-per-minute", type=positive, default=20, help="per API key")
    serve.add_argument("--cast", action="append", default=[], metavar="IMAGE",
                       help="also play this cast portrait (consented; the operator answers for it)")
    serve.add_argument("--casts", metavar="DIR", help="the cast registry whose casts are played (default: "
                       "$RECAST_CASTS or ~/.local/share/recast/casts; see recast casts add)")
    serve.add_argument("--detect-interval", type=positive, default=10, metavar="N")
    add_detector_option(serve)
    _add_occlusion_option(serve)
    add_engine_commands(sub)
    add_bake_commands(sub)
    add_casts_commands(sub)
    return parser


def _add_occlusion_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-occlusion", action="store_true",
                   help="paste the recast over whatever passes in front of a face (hands, microphones) too")


@contextmanager
def _progress(total: int, desc: str) -> Iterator[Callable[[int], None]]:
    bar = progress_bar(total, desc)
    try:
        yield lambda _index: bar.update(1)
    finally:
        bar.close()


def _frame_total(location: str) -> int:
    if is_url(location):  # never open a stream twice just for a progress bar
        return 0
    with MediaSource(location, keep_audio=False) as source:
        return source.info.frame_count


def _casts(args: argparse.Namespace) -> list[Cast]:
    """The casts named with --cast (image files or registered ids), else the default cast: Hopper where the sample
    title plays (--demo, a bench with no input, a cached --title), Collins on a video given as input."""
    given = casts_for(args.cast, CastRegistry(getattr(args, "casts", None) or default_registry()))
    sample = bool(getattr(args, "demo", False) or getattr(args, "title", None)
                  or not (getattr(args, "input", None) or getattr(args, "clip", None)))
    return given or default_casts(sample)[:1]


def _recaster(engine: str, args: argparse.Namespace, color: bool = True) -> Recaster:
    return make_recaster(engine, _casts(args), color=color, detector=args.detector)


def _options(args: argparse.Namespace) -> Any:
    from stream.render.options import RenderOptions

    return RenderOptions(mode=args.mode, detector=args.detector, tiles=args.tiles, max_faces=args.max_faces,
                         threads=args.threads,
                         detect_interval=args.detect_interval,
                         detect_width=args.detect_width, upsample=args.upsample, lookahead=args.lookahead,
                         badge=not getattr(args, "no_badge", False),
                         occlusion=not getattr(args, "no_occlusion", False))


def cmd_track(args: argparse.Namespace) -> int:
    from stream.perception.smoothing import jitter
    from stream.render.pipeline import run_tracking

    with _progress(_frame_total(args.input), "track") as tick:
        tracks = run_tracking(args.input, _options(args), on_frame=tick)
    tracks.save(args.out)
    if args.crops:
        from stream.render.pipeline import export_crops

        if args.crop_size < 16 or args.crop_size > 1024:
            raise UsageError(f"--crop-size {args.crop_size}: must be 16..1024")
        count = export_crops(args.input, tracks, Path(args.crops), args.crop_size, args.crop_every)
        print(f"{args.crops}: {count} aligned {args.crop_size}px face crops")
    frames = sum(len(t.faces) for t in tracks.tracks)
    raw = [jitter(t.raw_params()) for t in tracks.tracks]
    smooth = [jitter(t.quad_params()) for t in tracks.tracks]
    print(f"{args.out}: {tracks.frame_count} frames, {len(tracks.tracks)} tracks, {frames} faces, "
          f"cuts at {tracks.cuts}; jitter raw {_mean(raw):.4f} -> {args.mode} {_mean(smooth):.4f}")
    return 0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def cmd_render(args: argparse.Namespace) -> int:
    from stream.perception.track_set import TrackSet
    from stream.render.pipeline import render

    if bool(args.title) != bool(args.cache):
        raise UsageError("--title and --cache go together")
    if args.engine in ("stylegan", "fomm") and not args.title:
        raise UsageError(f"--engine {args.engine}: plays a baked title (give --title ID --cache DIR; see recast bake)")
    if args.title:
        from stream.cli.bake import render_baked

        if args.demo:
            raise UsageError("--demo and --title exclude each other")
        if Path(args.output).suffix.lower() != ".mp4":
            raise UsageError(f"{args.output}: output must be an .mp4 file")
        casts = _casts(args)
        classical = (make_recaster(args.engine, casts, detector=args.detector)
                     if args.engine in ("identity", "warp") else None)
        key = signing_key(args)
        code = render_baked(args, casts, _options(args), classical, _progress)
        if key is not None:
            sign_render(Path(args.output), key)
        return code
    if args.demo == bool(args.input):
        raise UsageError("give exactly one of INPUT or --demo")
    location = args.input or demo_location()
    output = Path(args.output)
    if output.suffix.lower() != ".mp4":
        raise UsageError(f"{output}: output must be an .mp4 file")
    key = signing_key(args)  # checked before any work
    recaster = _recaster(args.engine, args, color=not args.no_color_match)
    options = _options(args)
    if is_live(location) and options.mode == "offline" and not args.tracks:
        raise UsageError(f"{location}: a live stream cannot be read twice; use --mode live")
    tracks = None
    if args.tracks:
        try:
            tracks = TrackSet.load(args.tracks)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        options.mode = "offline"
    total = _frame_total(location)
    if options.mode == "offline" and tracks is None:
        from stream.render.pipeline import run_tracking

        with _progress(total, "track") as tick:
            tracks = run_tracking(location, options, on_frame=tick)
    with _progress(total, "render") as tick:
        report = render(location, output, recaster, options, tracks=tracks, on_frame=tick)
    print(f"{output}: {report.frames} frames, {report.faces_recast} faces recast by {recaster.name} "
          f"({report.faces_held} held on repeated frames, {report.faces_failed} failed), {report.tracks} tracks, "
          f"cuts at {report.cuts}, "
          f"{report.frames / max(report.seconds, 1e-9):.1f} fps")
    if key is not None:
        sign_render(output, key)
    return 0


def signing_key(args: argparse.Namespace) -> Any:
    """The operator's signing key of --sign-cert/--sign-key (or the environment), or None: signing is optional."""
    from stream.media.credentials import SigningKey

    return SigningKey.from_environment(args.sign_cert, args.sign_key)


def sign_render(output: Path, key: Any) -> None:
    """Sign a rendered file's Content Credentials, stating what its tags say."""
    from stream.media.credentials import manifest_for, sign_mp4
    from stream.media.sources import probe

    sign_mp4(output, key, manifest_for(probe(output)["metadata"], output.name))
    print(f"{output}: Content Credentials signed (C2PA)")


def cmd_bench(args: argparse.Namespace) -> int:
    from stream.cli.bench import format_bench, run_bench
    from stream.render.options import RenderOptions

    result: dict[str, Any] = {}
    if bool(args.generator) != bool(args.encoder):
        raise UsageError("--generator and --encoder go together")
    location = args.input or demo_location()
    options = RenderOptions(detect_interval=args.detect_interval, detector=args.detector, threads=args.threads)
    if args.only in (None, "live"):
        recaster = _recaster(args.engine, args)
        result = run_bench(location, recaster, options, args.repeats, span=args.frames)
        print(format_bench(result))
    if args.only in (None, "engines"):
        from export.engine_bench import format_engine_bench, run_engine_bench

        result["engines"] = run_engine_bench(device=args.device)
        print(format_engine_bench(result["engines"]))
    if args.only in (None, "bake"):
        from export.bench import format_bake_bench, run_bake_bench

        warp = _recaster("warp", args)
        result["bake"] = run_bake_bench(location, warp, options, generator=args.generator, encoder=args.encoder,
                                        encoder_size=args.encoder_size, pti_steps=args.pti_steps, device=args.device)
        print(format_bake_bench(result["bake"]))
    if args.only == "quality":
        import tempfile

        from stream.cli.quality import format_quality, run_quality

        recaster = _recaster(args.engine, args)
        cast = _casts(args)[0]
        with tempfile.TemporaryDirectory(prefix="recast-quality-") as tmp:
            result["quality"] = run_quality(args.clip or [location], recaster, cast.image, options, Path(tmp),
                                            floor=args.floor)
        print(format_quality(result["quality"]))
    if args.only == "channel":
        from stream.cli.bench_channel import format_channel_bench, run_channel_bench

        result["channel"] = run_channel_bench(location, viewers=args.viewers, seconds=args.seconds)
        print(format_channel_bench(result["channel"]))
    if args.only == "relay":
        from stream.cli.bench_relay import format_relay_bench, run_relay_bench

        result["relay"] = run_relay_bench(location, viewers=args.viewers, seconds=args.seconds)
        print(format_relay_bench(result["relay"]))
    if args.only == "provenance":
        from stream.cli.bench_provenance import format_provenance_bench, run_provenance_bench

        clips = args.clip or [location]
        unmarked = args.unmarked or sorted(str(p) for p in Path(clips[0]).parent.iterdir()
                                           if p.suffix.lower() in (".mp4", ".mov", ".mkv", ".webm"))
        result["provenance"] = run_provenance_bench(clips, _recaster(args.engine, args), options, unmarked)
        print(format_provenance_bench(result["provenance"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "track": cmd_track,
    "render": cmd_render,
    "bench": cmd_bench,
    "serve": cmd_serve,
    "verify": cmd_verify,
    **ENGINE_COMMANDS,
    **BAKE_COMMANDS,
    **CASTS_COMMANDS,
}


def _bad_input(exc: Exception, command: str) -> bool:
    """The caller's mistake (exit 2, one line): any InputError, and the engine tools' bad arguments."""
    if isinstance(exc, InputError):
        return True
    return isinstance(exc, ValueError) and command in ENGINE_COMMANDS


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"recast {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if _bad_input(exc, args.command):
            print(f"recast {args.command}: {exc}", file=sys.stderr)
            return 2
        log.exception("internal failure")
        print(f"recast {args.command}: internal error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
