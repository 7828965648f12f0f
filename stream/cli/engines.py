"""The engine commands of `recast`: parity, checkpoint, faces, animate, directions, dcgan, survey.

Loading any checkpoint prints its sha256 on stderr so operators can pin the files they bring.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.cli.options import progress_bar

if TYPE_CHECKING:  # the engines pull in PyTorch; commands import them when they run
    from engines.official import Checkpoint

DEVICES = ("cpu", "cuda")


def _device(text: str) -> str:
    if text not in DEVICES and not text.startswith("cuda:"):
        raise argparse.ArgumentTypeError(f"device must be cpu or cuda[:N], got {text!r}")
    return text


def _share(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {value}")
    return value


def add_engine_commands(sub: Any) -> None:
    parity = sub.add_parser("parity", help="check the engines against reference-vector folders")
    parity.add_argument("folders", nargs="+", metavar="VECTORS_DIR")

    ck = sub.add_parser("checkpoint", help="load a checkpoint safely, print what it is and its sha256")
    ck.add_argument("path", metavar="CHECKPOINT")
    ck.add_argument("--kind", choices=("stylegan2", "fomm", "e4e", "dcgan"))
    ck.add_argument("--config", metavar="JSON", help="FOMM architecture config (default: vox-256)")
    ck.add_argument("--to-safetensors", metavar="OUT", help="also write it in Recast's safetensors format")

    faces = sub.add_parser("faces", help="generate synthetic faces with StyleGAN2")
    faces_sub = faces.add_subparsers(dest="faces_command", required=True)
    sample = faces_sub.add_parser("sample", help="one PNG per seed")
    sample.add_argument("--generator", required=True, metavar="G.pkl")
    sample.add_argument("--seeds", required=True, help="e.g. 1-8 or 1,7,42")
    sample.add_argument("-o", "--out", required=True, metavar="DIR")
    sample.add_argument("--truncation", type=float, default=0.7)
    sample.add_argument("--device", type=_device, default="cpu")
    interp = faces_sub.add_parser("interpolate", help="a video walking the latent space between seeds")
    interp.add_argument("--generator", required=True, metavar="G.pkl")
    interp.add_argument("--seeds", required=True, help="e.g. 1,7,42")
    interp.add_argument("-o", "--out", required=True, metavar="OUT.mp4")
    interp.add_argument("--steps", type=int, default=30, help="frames from one seed to the next")
    interp.add_argument("--fps", type=int, default=30)
    interp.add_argument("--truncation", type=float, default=0.7)
    interp.add_argument("--device", type=_device, default="cpu")
    interp.add_argument("--no-badge", action="store_true")

    anim = sub.add_parser("animate", help="FOMM: a portrait follows the motion of a driving video")
    anim.add_argument("--checkpoint", required=True, metavar="vox-cpk.pth.tar")
    anim.add_argument("--config", metavar="JSON", help="architecture config (default: vox-256)")
    anim.add_argument("--source", required=True, metavar="FACE.png")
    anim.add_argument("--driving", required=True, metavar="VIDEO")
    anim.add_argument("-o", "--out", required=True, metavar="OUT.mp4")
    anim.add_argument("--crop", choices=("face", "center"), default="face",
                      help="driving crop: a square around the first frame's face, or the centre square")
    anim.add_argument("--absolute", action="store_true", help="absolute keypoints instead of relative motion")
    anim.add_argument("--adapt-scale", action="store_true", help="scale motion by the face hulls' sizes")
    anim.add_argument("--device", type=_device, default="cpu")
    anim.add_argument("--no-badge", action="store_true")

    directions = sub.add_parser("directions", help="latent edit directions")
    dsub = directions.add_subparsers(dest="directions_command", required=True)
    learn = dsub.add_parser("learn", help="learn a direction from two labelled folders of face crops")
    learn.add_argument("--encoder", required=True, metavar="e4e.pt")
    learn.add_argument("--positive", required=True, metavar="DIR")
    learn.add_argument("--negative", required=True, metavar="DIR")
    learn.add_argument("-o", "--out", required=True, metavar="DIRECTION.npy")
    learn.add_argument("--l2", type=float, default=1.0, help="L2 penalty of the logistic regression")
    learn.add_argument("--device", type=_device, default="cpu")
    dlist = dsub.add_parser("list", help="list direction files (.npy STIT, .pt e4e/PTI)")
    dlist.add_argument("folders", nargs="+", metavar="DIR")

    dcgan = sub.add_parser("dcgan", help="a small DCGAN on face crops")
    dcsub = dcgan.add_subparsers(dest="dcgan_command", required=True)
    train = dcsub.add_parser("train", help="train on a folder of aligned face crops (`recast track --crops`)")
    train.add_argument("--faces", required=True, metavar="DIR")
    train.add_argument("-o", "--out", required=True, metavar="MODEL", help="model file (safetensors format)")
    train.add_argument("--size", type=int, default=32, choices=(16, 32, 64, 128))
    train.add_argument("--epochs", type=int, default=60)
    train.add_argument("--batch", type=int, default=16)
    train.add_argument("--width", type=int, default=32, help="base channel count of G and D")
    train.add_argument("--seed", type=int, default=0)

    survey = sub.add_parser("survey", help="chi-square test of yes/no answers against a claimed share")
    survey.add_argument("responses", metavar="RESPONSES.csv")
    survey.add_argument("--claim", type=_share, required=True, help="claimed share of 'yes'")
    survey.add_argument("--column", default="answer")
    survey.add_argument("--alpha", type=_share, default=0.05)
    survey.add_argument("--plot", default="survey.png", metavar="PNG", help="observed vs expected chart")


def _load(path: str, kind: str | None = None, config_path: str | None = None) -> Checkpoint:
    from engines.checkpoints import open_checkpoint

    config = None
    if config_path:
        try:
            config = json.loads(Path(config_path).read_text())
        except (OSError, ValueError, RecursionError) as err:  # RecursionError: JSON nested too deep
            raise ValueError(f"{config_path}: not a readable JSON config ({str(err)[:200]})") from None
    ckpt = open_checkpoint(path, kind=kind, config=config)
    print(f"{ckpt.path}: {ckpt.kind}, sha256 {ckpt.sha256}", file=sys.stderr)
    return ckpt


def cmd_parity(args: argparse.Namespace) -> int:
    from engines.parity import run_parity

    ok = True
    for folder in args.folders:
        report = run_parity(folder)
        print(report.format())
        ok = ok and report.ok
    return 0 if ok else 1


def cmd_checkpoint(args: argparse.Namespace) -> int:
    from engines.checkpoints import save_safetensors

    ckpt = _load(args.path, args.kind, args.config)
    for name, module in ckpt.modules.items():
        count = sum(p.numel() for p in module.parameters())
        print(f"{name}: {type(module).__name__}, {count:,} parameters, {len(module.state_dict())} entries")
    print(f"config: {json.dumps(ckpt.config)}")
    for note in ckpt.notes:
        print(f"note: {note}")
    if args.to_safetensors:
        print(f"wrote {save_safetensors(ckpt, args.to_safetensors)}")
    return 0


def cmd_faces(args: argparse.Namespace) -> int:
    from export.generation import interpolate_video, parse_seeds, sample_faces

    seeds = parse_seeds(args.seeds)
    ckpt = _load(args.generator, "stylegan2")
    if args.faces_command == "sample":
        with progress_bar(len(seeds), "faces", "face") as bar:
            paths = sample_faces(ckpt, seeds, Path(args.out), args.truncation, args.device,
                                 on_face=lambda _p: bar.update(1))
        print(f"{args.out}: {len(paths)} synthetic faces (truncation {args.truncation:g})")
        return 0
    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"{out}: output must be an .mp4 file")
    with progress_bar(args.steps * (len(seeds) - 1) + 1, "interpolate") as bar:
        frames = interpolate_video(ckpt, seeds, out, args.steps, args.fps, args.truncation, args.device,
                                   badge=not args.no_badge, on_frame=lambda _i: bar.update(1))
    print(f"{out}: {frames} frames through seeds {seeds}")
    return 0


def cmd_animate(args: argparse.Namespace) -> int:
    from export.generation import animate
    from stream.casts.cast import read_image

    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"{out}: output must be an .mp4 file")
    ckpt = _load(args.checkpoint, "fomm", args.config)
    source = read_image(args.source)
    with progress_bar(0, "animate") as bar:
        frames = animate(ckpt, source, args.driving, out, crop=args.crop, relative=not args.absolute,
                         adapt_scale=args.adapt_scale, device=args.device, badge=not args.no_badge,
                         source_note=f"operator-supplied portrait {Path(args.source).name}",
                         on_frame=lambda _i: bar.update(1))
    print(f"{out}: {frames} frames, {Path(args.source).name} driven by {args.driving}")
    return 0


def cmd_directions(args: argparse.Namespace) -> int:
    from engines.directions import learn_direction, list_directions, save_direction

    if args.directions_command == "list":
        skipped: list[str] = []
        for folder in args.folders:
            for direction in list_directions(folder, skipped):
                print(direction.describe())
        for reason in skipped:
            print(f"skipped {reason}", file=sys.stderr)
        return 0
    from export.generation import encode_faces

    ckpt = _load(args.encoder, "e4e")
    positive = encode_faces(ckpt, Path(args.positive), args.device)
    negative = encode_faces(ckpt, Path(args.negative), args.device)
    learned = learn_direction(positive, negative, l2=args.l2)
    save_direction(args.out, learned.normal)
    print(f"{args.out}: {learned.normal.shape} unit normal from {learned.positives} positive and "
          f"{learned.negatives} negative faces; training accuracy {learned.train_accuracy:.3f} "
          f"(balanced {learned.balanced_accuracy:.3f})")
    return 0


def cmd_dcgan(args: argparse.Namespace) -> int:
    from PIL import Image

    from engines import dcgan
    from engines.checkpoints import save_safetensors
    from engines.official import Checkpoint

    out = Path(args.out)  # written in our safetensors format whatever its name
    if out.is_dir():
        raise ValueError(f"{out}: is a folder; give the model file's path")
    faces = dcgan.load_faces(Path(args.faces), args.size)
    with progress_bar(args.epochs, "dcgan", "epoch") as bar:

        def progress(_epoch: int, d_loss: float, g_loss: float) -> None:
            bar.update(1)
            bar.set_postfix(d=f"{d_loss:.3f}", g=f"{g_loss:.3f}")

        G, _, report = dcgan.train(faces, epochs=args.epochs, batch_size=args.batch, width=args.width,
                                   seed=args.seed, progress=progress)
    ckpt = Checkpoint("dcgan", Path(args.faces), "", {"generator": G.config()}, {"generator": G})
    save_safetensors(ckpt, out)
    grid = out.with_name(out.stem + "-samples.png")
    Image.fromarray(dcgan.sample_grid(G)).save(grid)
    print(f"{out}: DCGAN {args.size}px trained on {len(faces)} faces, {report.steps} steps, final losses "
          f"D {report.d_loss[-1]:.3f} G {report.g_loss[-1]:.3f}; samples in {grid}")
    return 0


def cmd_survey(args: argparse.Namespace) -> int:
    from stream.cli.survey import chi_square, plot, read_answers

    yes, no, blank = read_answers(Path(args.responses), args.column)
    result = chi_square(yes, no, args.claim, blank)
    print(result.format(args.alpha))
    if args.plot:
        print(f"plot: {plot(result, Path(args.plot))}")
    return 0


ENGINE_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "parity": cmd_parity,
    "checkpoint": cmd_checkpoint,
    "faces": cmd_faces,
    "animate": cmd_animate,
    "directions": cmd_directions,
    "dcgan": cmd_dcgan,
    "survey": cmd_survey,
}
