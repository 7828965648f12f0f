"""Content Credentials: a C2PA manifest signed into a rendered mp4 (`recast render --sign-cert --sign-key`), and read
back (`recast verify`).

The manifest says what was done: a `c2pa.created` action whose digital source type is IPTC's
`compositeWithTrainedAlgorithmicMedia`, then a `c2pa.edited` action (faces replaced by the named engine), and an
`org.recast.recast` assertion with the engine, the casts and their kind (synthetic or consented), the mode and the
source's name, as the file's own tags say them. It is signed with the operator's certificate chain and private key
(PEM; ES256 for an EC P-256 key, ES384 for P-384, PS256 for RSA, Ed25519), and the C2PA hash binds it to every
byte of the file's media: a file edited after signing fails its check. A reader given the operator's trust anchors
(`--trust CA.pem`) also says whether the signer is one of theirs; without them a valid signature is reported as
valid but not trusted.

The c2pa-python package (MIT or Apache-2.0) is imported only here, when a file is signed or read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines.errors import InputError

SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
RECAST_ASSERTION = "org.recast.recast"


@dataclass(frozen=True)
class SigningKey:
    """An operator's certificate chain (the signer's first) and its private key, PEM."""

    chain: bytes
    key: bytes
    alg: str

    @classmethod
    def load(cls, cert: str | Path, key: str | Path) -> SigningKey:
        """The chain and key from their files, checked: readable PEM, a key the chain's first certificate holds."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        chain, secret = _read(cert, "certificate chain"), _read(key, "private key")
        try:
            certificates = x509.load_pem_x509_certificates(chain)
        except ValueError as exc:
            raise InputError(f"{cert}: not a PEM certificate chain ({exc})") from None
        try:
            private = serialization.load_pem_private_key(secret, password=None)
        except (ValueError, TypeError) as exc:
            raise InputError(f"{key}: not an unencrypted PEM private key ({exc})") from None
        public = private.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
        signer = certificates[0].public_key().public_bytes(serialization.Encoding.DER,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo)
        if public != signer:
            raise InputError(f"{key}: not the key of the first certificate in {cert}")
        if isinstance(private, ec.EllipticCurvePrivateKey):
            alg = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}.get(private.curve.name)
        elif isinstance(private, rsa.RSAPrivateKey):
            alg = "ps256"
        elif isinstance(private, ed25519.Ed25519PrivateKey):
            alg = "ed25519"
        else:
            alg = None
        if alg is None:
            raise InputError(f"{key}: a key C2PA does not sign with (EC P-256/384/521, RSA or Ed25519)")
        return cls(chain, secret, alg)

    @classmethod
    def from_environment(cls, cert: str | None, key: str | None) -> SigningKey | None:
        """The key of `--sign-cert`/`--sign-key`, or of RECAST_SIGN_CERT/RECAST_SIGN_KEY; None when neither is set."""
        cert = cert or os.environ.get("RECAST_SIGN_CERT")
        key = key or os.environ.get("RECAST_SIGN_KEY")
        if not cert and not key:
            return None
        if not cert or not key:
            raise InputError("signing takes both a certificate chain and its private key (--sign-cert, --sign-key)")
        return cls.load(cert, key)


def _read(path: str | Path, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    if len(data) > 1 << 20:
        raise InputError(f"{path}: over 1 MB; not a PEM {what}")
    return data


def manifest_for(tags: dict[str, str], title: str) -> dict[str, Any]:
    """The manifest of a recast file, from the tags its sink wrote (stream/media/provenance.file_metadata)."""
    casts = json.loads(tags.get("recast_casts", "[]") or "[]")
    engine = tags.get("recast_engine", "unknown")
    return {
        "claim_generator_info": [{"name": "recast"}],
        "title": title,
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [
                {"action": "c2pa.created", "digitalSourceType": SOURCE_TYPE, "softwareAgent": f"recast {engine}"},
                {"action": "c2pa.edited", "digitalSourceType": SOURCE_TYPE, "softwareAgent": f"recast {engine}",
                 "parameters": {"description": f"faces replaced by the {engine} recaster"}},
            ]}},
            {"label": RECAST_ASSERTION, "data": {"recast": True, "engine": engine, "casts": casts,
                                                 "mode": tags.get("recast_mode", ""),
                                                 "source": tags.get("recast_source", ""),
                                                 "mark_id": tags.get("recast_mark_id", "")}},
        ],
    }


def sign_mp4(path: Path, key: SigningKey, manifest: dict[str, Any]) -> None:
    """Sign the manifest into the mp4 at `path` (written to a temporary file beside it, then renamed over it)."""
    import c2pa

    info = c2pa.C2paSignerInfo(alg=key.alg.encode(), sign_cert=key.chain, private_key=key.key, ta_url=None)
    signer = c2pa.Signer.from_info(info)
    builder = c2pa.Builder(json.dumps(manifest))
    signed = path.with_name(f".{path.name}.signing")
    try:
        with path.open("rb") as source, signed.open("w+b") as destination:
            builder.sign(signer, "video/mp4", source, destination)
        signed.replace(path)
    except c2pa.C2paError as exc:
        raise InputError(f"{path}: cannot sign ({exc})") from None
    finally:
        signed.unlink(missing_ok=True)


@dataclass
class Credentials:
    """What a file's Content Credentials say: `state` is absent, trusted, valid (signed, signer not among the trust
    anchors given, or none given), untrusted (anchors given, the signer not among them), tampered (the file was
    changed after signing) or invalid (another failure); the recast assertion, and each failure's code."""

    state: str
    recast: dict[str, Any] | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        """Whether the credentials stand: signed, unchanged, and trusted where anchors were given."""
        return self.state in ("trusted", "valid")


def read_credentials(path: Path, trust: bytes | None = None) -> Credentials:
    """The C2PA manifest of a file, checked (`trust`: PEM trust anchors, e.g. the operator's CA)."""
    import c2pa

    context = None
    if trust is not None:
        context = c2pa.Context.from_dict({"trust": {"trust_anchors": trust.decode("utf-8", "replace")},
                                          "verify": {"verify_trust": True}})
    try:
        reader = c2pa.Reader(str(path), context=context) if context is not None else c2pa.Reader(str(path))
        report = json.loads(reader.json())
    except c2pa.C2paError as exc:
        if "ManifestNotFound" in type(exc).__name__ or "no JUMBF" in str(exc):
            return Credentials("absent")
        if "NotSupported" in type(exc).__name__:  # a container C2PA does not define (mkv): no manifest to read
            return Credentials("absent")
        return Credentials("invalid", failures=[str(exc).splitlines()[0][:200]])
    active = report.get("manifests", {}).get(report.get("active_manifest", ""), {})
    recast = next((a.get("data") for a in active.get("assertions", []) if a.get("label") == RECAST_ASSERTION), None)
    codes = [s.get("code", "") for s in report.get("validation_status", [])]
    failures = [c for c in codes if c != "signingCredential.untrusted" or trust is not None]
    if any("hash" in c.lower() and "mismatch" in c.lower() for c in codes):
        state = "tampered"
    elif failures and all(c == "signingCredential.untrusted" for c in failures):
        state = "untrusted"
    elif failures:
        state = "invalid"
    elif report.get("validation_state") == "Trusted":
        state = "trusted"
    else:
        state = "valid"
    return Credentials(state, recast, failures)
