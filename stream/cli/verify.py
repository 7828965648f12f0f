"""`recast verify FILE|URL`: whether a video says it was recast, and whether that can be trusted.

It reads the invisible mark in the pictures (stream/media/watermark.py: which frames carry it, its payload and a
confidence; decoded a frame at a time, so a file of any length is read in bounded memory; the faces, which the mark
spares, left out), the file's Content
Credentials (stream/media/credentials.py: a C2PA manifest signed by `recast render
--sign-cert --sign-key`, checked against the file's bytes and, with `--trust CA.pem`, against the operator's trust
anchors) and its container tags (stream/media/provenance.file_metadata: written into every rendered file, unsigned).
A URL (http, https) is read as it streams; Content Credentials are read from files only.

Exit status: 0 marked (credentials that hold, or, without credentials, the mark in some frame or recast tags);
3 not marked; 4 marked, but its credentials fail (the file changed after signing, a signer not among the trust
anchors, or another failure); 2 bad input (no such file, not a video, a stream that cannot be decoded).
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from pathlib import Path
from typing import Any

from engines.errors import InputError

MARKED, NOT_MARKED, FAILS = 0, 3, 4


def add_verify_command(sub: Any) -> None:
    verify = sub.add_parser("verify", help="say whether a video was recast (its signed Content Credentials, its tags)")
    verify.add_argument("input", help="video file, or its http(s) URL")
    verify.add_argument("--trust", metavar="CA.pem", help="trust anchors: the operator's CA certificates (PEM)")
    verify.add_argument("--json", action="store_true", help="print the findings as JSON")
    verify.add_argument("--frames", type=int, metavar="N", help="read the mark in the first N frames only")


def is_url(location: str) -> bool:
    return urllib.parse.urlsplit(location).scheme in ("http", "https")


def verify_file(location: str, trust: bytes | None, max_frames: int | None = None) -> dict[str, Any]:
    """The findings: the mark in the pictures, the container's recast tags, the credentials' state and assertion,
    the verdict."""
    import av

    from stream.media.credentials import Credentials, read_credentials
    from stream.media.watermark import read_container
    from stream.perception.stills import installed_face_outlines

    url = is_url(location)
    if not url and not Path(location).is_file():
        raise InputError(f"{location}: no such file")
    try:
        with av.open(location, metadata_errors="ignore") as container:  # opened once: a URL is fetched once
            if not container.streams.video:
                raise InputError(f"{location}: has no video stream")
            tags = dict(container.metadata)
            mark = read_container(container, max_frames, installed_face_outlines())
    except (av.error.FFmpegError, OSError) as exc:
        raise InputError(f"{location}: not a readable video ({exc})") from None
    credentials = Credentials("absent") if url else read_credentials(Path(location), trust)
    tagged = tags.get("recast") == "1"
    if credentials.state != "absent":
        verdict = "marked" if credentials.holds else "fails"
    else:
        verdict = "marked" if tagged or mark.marked_any else "not marked"
    return {"file": location, "verdict": verdict, "mark": mark.describe(), "credentials": credentials.state,
            "credentials_failures": credentials.failures, "recast": credentials.recast,
            "tags": {k: v for k, v in tags.items() if k.startswith("recast")}}


def _describe(found: dict[str, Any]) -> str:
    lines = [f"{found['file']}: {found['verdict']}"]
    from stream.media.watermark import FRAMES_PER_PATTERN, PATTERNS, Z_MARKED

    mark = found["mark"]
    if mark["marked"]:
        payload = mark["payload"]
        says = (f"{'a synthetic cast' if payload['synthetic'] else 'a consented cast'}, id {payload['id']}"
                if payload else f"its payload unread (it takes {PATTERNS * FRAMES_PER_PATTERN} marked frames)")
        lines.append(f"  invisible mark: in {mark['marked']} of {mark['frames']} frames ({mark['fraction']:.0%}), "
                     f"{says}; score {mark['z_max']:.1f} (marked from {Z_MARKED:.0f}), confidence "
                     f"{mark['confidence']:.6f}")
    else:
        lines.append(f"  invisible mark: none in {mark['frames']} frames (best score {mark['z_max']:.1f})")
    state = found["credentials"]
    about = {"absent": "none", "trusted": "signed by a trusted key, unchanged since",
             "valid": "signed, unchanged since (no trust anchors given: the signer is not checked)",
             "untrusted": "signed by a key outside the trust anchors given",
             "tampered": "the file was changed after it was signed", "invalid": "they fail their checks"}[state]
    lines.append(f"  Content Credentials: {about}"
                 + (f" ({', '.join(found['credentials_failures'])})" if found["credentials_failures"] else ""))
    recast = found["recast"]
    if recast:
        casts = ", ".join(f"{c.get('id')} ({c.get('kind')})" if isinstance(c, dict) else str(c)
                          for c in recast.get("casts", []))
        lines.append(f"  says: faces replaced by the {recast.get('engine')} recaster; casts {casts or 'unnamed'}")
    tags = found["tags"]
    lines.append("  tags: " + (f"recast by {tags.get('recast_engine')} ({tags.get('recast_mode')})"
                               if tags.get("recast") == "1" else "none"))
    return "\n".join(lines)


def cmd_verify(args: argparse.Namespace) -> int:
    trust = None
    if args.trust:
        try:
            trust = Path(args.trust).read_bytes()
        except OSError as exc:
            raise InputError(f"{args.trust}: cannot read the trust anchors ({exc.strerror})") from None
        if b"-----BEGIN CERTIFICATE-----" not in trust:
            raise InputError(f"{args.trust}: not PEM certificates")
    if args.frames is not None and args.frames < 1:
        raise InputError(f"--frames {args.frames}: must be at least 1")
    found = verify_file(args.input, trust, args.frames)
    print(json.dumps(found, indent=1) if args.json else _describe(found))
    return {"marked": MARKED, "not marked": NOT_MARKED, "fails": FAILS}[found["verdict"]]
