"""`recast verify FILE`: whether a video says it was recast, and whether that can be trusted.

It reads the file's Content Credentials (stream/media/credentials.py: a C2PA manifest signed by `recast render
--sign-cert --sign-key`, checked against the file's bytes and, with `--trust CA.pem`, against the operator's trust
anchors) and its container tags (stream/media/provenance.file_metadata: written into every rendered file, unsigned).
It never decodes the picture, so a file of any size is read in bounded memory.

Exit status: 0 marked (credentials that hold, or, without credentials, recast tags); 3 not marked; 4 marked, but its
credentials fail (the file changed after signing, a signer not among the trust anchors, or another failure);
2 bad input (no such file, not a video).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from engines.errors import InputError

MARKED, NOT_MARKED, FAILS = 0, 3, 4


def add_verify_command(sub: Any) -> None:
    verify = sub.add_parser("verify", help="say whether a video was recast (its signed Content Credentials, its tags)")
    verify.add_argument("input", help="video file")
    verify.add_argument("--trust", metavar="CA.pem", help="trust anchors: the operator's CA certificates (PEM)")
    verify.add_argument("--json", action="store_true", help="print the findings as JSON")


def verify_file(path: Path, trust: bytes | None) -> dict[str, Any]:
    """The findings: the container's recast tags, the credentials' state and assertion, the verdict."""
    import av

    from stream.media.credentials import read_credentials

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                raise InputError(f"{path}: has no video stream")
            tags = dict(container.metadata)
    except av.error.FFmpegError as exc:
        raise InputError(f"{path}: not a readable video ({exc})") from None
    credentials = read_credentials(path, trust)
    tagged = tags.get("recast") == "1"
    if credentials.state != "absent":
        verdict = "marked" if credentials.holds else "fails"
    else:
        verdict = "marked" if tagged else "not marked"
    return {"file": str(path), "verdict": verdict, "credentials": credentials.state,
            "credentials_failures": credentials.failures, "recast": credentials.recast,
            "tags": {k: v for k, v in tags.items() if k.startswith("recast")}}


def _describe(found: dict[str, Any]) -> str:
    lines = [f"{found['file']}: {found['verdict']}"]
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
    found = verify_file(Path(args.input), trust)
    print(json.dumps(found, indent=1) if args.json else _describe(found))
    return {"marked": MARKED, "not marked": NOT_MARKED, "fails": FAILS}[found["verdict"]]
