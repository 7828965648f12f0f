"""Content Credentials (stream/media/credentials.py) and `recast verify` (stream/cli/verify.py) on real renders: a
file signed with a test key made here (never a key in the repository) verifies, with the operator's trust anchors
too; a file edited after signing, or signed by another key, fails; an unsigned render is marked by its tags alone;
the shared clips are not marked; bad input gets exit 2 and one line."""

from __future__ import annotations

import datetime
import fractions
import json
from pathlib import Path

import av
import numpy as np
import pytest

from stream.cli.main import main
from stream.media.sinks import first_seconds
from tests.conftest import media

CLIP = media("videos/liveportrait_d20.mp4")


def _test_key(folder: Path, name: str) -> tuple[Path, Path, Path]:
    """A test CA and a signer it certifies (EC P-256): (chain.pem, key.pem, ca.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def subject(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"Recast tests {name}")])

    def certificate(sub: x509.Name, issuer: x509.Name, public: object, signer: object, ca: bool) -> x509.Certificate:
        usage = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                               "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False)
        usage.update({"key_cert_sign": ca, "crl_sign": ca, "digital_signature": not ca})
        builder = (x509.CertificateBuilder().subject_name(sub).issuer_name(issuer).public_key(public)
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=7))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(**usage), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False))
        if not ca:  # what C2PA asks of a signer's certificate: an extended key usage, its issuer's key id
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                                            critical=False)
            builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                                            critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate(subject("test CA"), subject("test CA"), ca_key.public_key(), ca_key, True)
    signer = certificate(subject("test signer"), ca.subject, key.public_key(), ca_key, False)
    pem = serialization.Encoding.PEM
    chain, key_file, ca_file = folder / f"{name}-chain.pem", folder / f"{name}-key.pem", folder / f"{name}-ca.pem"
    chain.write_bytes(signer.public_bytes(pem) + ca.public_bytes(pem))
    key_file.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ca_file.write_bytes(ca.public_bytes(pem))
    return chain, key_file, ca_file


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("credentials")
    chain, key, ca = _test_key(folder, "operator")
    _, _, other_ca = _test_key(folder, "other")
    clip = first_seconds(CLIP, folder / "d20.mp4", 1.0)
    out = folder / "signed.mp4"
    assert main(["render", str(clip), "-o", str(out), "--sign-cert", str(chain), "--sign-key", str(key)]) == 0
    plain = folder / "plain.mp4"
    assert main(["render", str(clip), "-o", str(plain)]) == 0
    return {"signed": out, "plain": plain, "ca": ca, "other_ca": other_ca, "chain": chain, "key": key,
            "folder": folder}


def _verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    code = main(["verify", *args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if code != 2 else {}


def test_a_signed_render_verifies_and_says_what_was_done(signed: dict[str, Path],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, found = _verify(capsys, str(signed["signed"]))
    assert code == 0 and found["credentials"] == "valid"
    recast = found["recast"]
    assert isinstance(recast, dict) and recast["engine"] == "warp" and recast["recast"] is True
    assert recast["casts"][0]["kind"] in ("synthetic", "consented")
    code, found = _verify(capsys, str(signed["signed"]), "--trust", str(signed["ca"]))
    assert code == 0 and found["credentials"] == "trusted"


def test_another_key_or_an_edit_after_signing_fails(signed: dict[str, Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, found = _verify(capsys, str(signed["signed"]), "--trust", str(signed["other_ca"]))
    assert code == 4 and found["credentials"] == "untrusted"
    edited = signed["folder"] / "edited.mp4"
    data = bytearray(signed["signed"].read_bytes())
    data[len(data) // 2] ^= 0xFF  # a byte of the media, after signing
    edited.write_bytes(bytes(data))
    code, found = _verify(capsys, str(edited))
    assert code == 4 and found["credentials"] == "tampered"


def test_unsigned_renders_carry_tags_and_the_shared_clips_nothing(signed: dict[str, Path],
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, found = _verify(capsys, str(signed["plain"]))
    assert code == 0 and found["credentials"] == "absent" and found["tags"]["recast"] == "1"  # type: ignore[index]
    assert found["mark"]["fraction"] == 1.0  # type: ignore[index]  # the invisible mark in every frame
    for clip in sorted(Path(CLIP).parent.glob("*.mp4")):  # their first 100 frames (the bench reads them whole)
        code, found = _verify(capsys, str(clip), "--frames", "100")
        assert code == 3 and found["verdict"] == "not marked", clip
        assert found["mark"]["marked"] == 0 and found["mark"]["frames"] == min(100, found["mark"]["frames"])  # type: ignore[index]


def test_bad_input_gets_a_clear_answer(signed: dict[str, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(tmp_path / "missing.mp4")]) == 2
    assert "no such file" in capsys.readouterr().err
    audio = tmp_path / "audio.m4a"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        for start in range(0, 44100, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert main(["verify", str(audio)]) == 2
    assert "no video" in capsys.readouterr().err
    tiny = tmp_path / "tiny.mp4"
    with av.open(str(tiny), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 2, 2, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((2, 2, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert main(["verify", str(tiny)]) == 3
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(signed["signed"].read_bytes()[: signed["signed"].stat().st_size // 3])
    code = main(["verify", str(truncated)])
    err = capsys.readouterr()
    assert code in (2, 4), err  # a file cut short: not readable, or its credentials fail; never a crash
    assert main(["verify", str(signed["signed"]), "--trust", str(signed["key"])]) == 2  # a key, not certificates
    assert "not PEM certificates" in capsys.readouterr().err
    assert main(["render", str(CLIP), "-o", str(tmp_path / "x.mp4"), "--sign-key", str(signed["key"])]) == 2
    assert "both a certificate chain and its private key" in capsys.readouterr().err
    assert main(["render", str(CLIP), "-o", str(tmp_path / "x.mp4"), "--sign-cert", str(signed["other_ca"]),
                 "--sign-key", str(signed["key"])]) == 2
    assert "not the key of the first certificate" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()  # refused before any work
