"""Official checkpoint containers, built here at full size the way the originals were written, load strictly;
hostile and broken files are refused with the file named, and nothing in them runs."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engines import checkpoints as ck
from engines import official
from engines.e4e import Encoder4Editing
from engines.stylegan2 import Generator
from tests.engine_helpers import small_fomm, small_stylegan
from tests.official_formats import (
    manifest,
    persistent_from_module,
    random_tensors,
    write_e4e_checkpoint,
    write_fomm_checkpoint,
    write_network_pickle,
)


def _ffhq_config() -> dict:
    m = manifest("stylegan2_ada_ffhq1024_G_ema")
    return {k: v for k, v in m["config"].items() if k != "derived"}


@pytest.fixture(scope="module")
def ffhq_generator() -> Generator:
    torch.manual_seed(0)
    return Generator(**_ffhq_config()).eval()


@pytest.mark.parametrize("protocol", [2, 4])
def test_full_size_ffhq_pickle_loads_strictly(tmp_path: Path, ffhq_generator: Generator, protocol: int) -> None:
    path = write_network_pickle(tmp_path / "ffhq.pkl", ffhq_generator, _ffhq_config(), protocol=protocol)
    loaded = official.load_stylegan2_pkl(path)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    G = loaded.modules["generator"]
    assert loaded.config["init_kwargs"] == _ffhq_config()
    want = ffhq_generator.state_dict()
    got = G.state_dict()
    assert list(got) == list(want) and len(got) == 182
    assert all(torch.equal(got[k], want[k]) for k in want)
    m = manifest("stylegan2_ada_ffhq1024_G_ema")
    assert sum(v.numel() for k, v in got.items() if k not in m["buffers"]) == m["num_parameters"]


def test_pickle_with_code_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Evil()}))
    with pytest.raises(official.CheckpointError, match=r"evil\.pkl: refused: refused global (posix|os)\.system"):
        official.load_stylegan2_pkl(path)
    assert not marker.exists()
    # the same payload inside a torch file meets the weights-only loader
    torch_path = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil()}, torch_path)
    with pytest.raises(official.CheckpointError, match=r"evil\.pt: refused by the weights-only loader"):
        official.load_e4e(torch_path)
    assert not marker.exists()


def test_module_source_in_the_pickle_is_never_executed(tmp_path: Path) -> None:
    G, init = small_stylegan()
    path = write_network_pickle(tmp_path / "g.pkl", G, init, with_d=False)
    # tests/official_formats.py puts `raise SystemExit(3)` in module_src and a reconstructor that asserts
    assert b"raise SystemExit(3)" in path.read_bytes()
    loaded = official.load_stylegan2_pkl(path)
    z = torch.randn(2, 64)
    with torch.no_grad():
        # the same weights and ops; a tolerance, not bitwise (kernels may pick another summation order by alignment)
        torch.testing.assert_close(loaded.modules["generator"](z, None), G(z, None), atol=1e-6, rtol=0)


def test_wrong_shapes_truncation_and_other_architectures_are_refused(tmp_path: Path) -> None:
    G, init = small_stylegan()
    wrong = dict(init, img_resolution=32)  # the file claims 32 px but holds 64 px tensors
    path = write_network_pickle(tmp_path / "wrong.pkl", G, wrong, with_d=False)
    with pytest.raises(official.CheckpointError, match=r"wrong\.pkl: G_ema does not match the architecture it states"):
        official.load_stylegan2_pkl(path)

    good = write_network_pickle(tmp_path / "good.pkl", G, init, with_d=False)
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(official.CheckpointError, match=r"cut\.pkl: not a readable network pickle"):
        official.load_stylegan2_pkl(cut)

    disc = persistent_from_module(G, init)
    disc.meta["class_name"] = "Discriminator"
    claims = tmp_path / "claims.pkl"
    import tests.official_formats  # noqa: F401  (registers the persistence stand-ins)

    claims.write_bytes(pickle.dumps({"G_ema": disc}, protocol=4))
    with pytest.raises(official.CheckpointError, match="G_ema is a 'Discriminator', not a StyleGAN2 Generator"):
        official.load_stylegan2_pkl(claims)

    odd = tmp_path / "odd.pkl"
    bad_kwargs = dict(init, synthesis_kwargs={**init["synthesis_kwargs"], "architecture": "resnet"})
    write_network_pickle(odd, G, bad_kwargs, with_d=False)
    with pytest.raises(official.CheckpointError, match="unsupported Generator arguments"):
        official.load_stylegan2_pkl(odd)

    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(official.CheckpointError, match="empty file"):
        official.load_stylegan2_pkl(empty)
    with pytest.raises(official.CheckpointError, match="no such file"):
        official.load_stylegan2_pkl(tmp_path / "absent.pkl")


def test_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    G, init = small_stylegan()
    path = write_network_pickle(tmp_path / "g.pkl", G, init, with_d=False)
    monkeypatch.setenv("RECAST_MAX_CHECKPOINT_BYTES", "1000")
    with pytest.raises(official.CheckpointError, match="over the 1000-byte limit"):
        official.load_stylegan2_pkl(path)


def test_full_size_vox_checkpoint_loads_strictly(tmp_path: Path) -> None:
    kp = manifest("fomm_vox256_kp_detector")
    gen = manifest("fomm_vox256_generator")
    kp_state = random_tensors(kp["tensors"], kp.get("dtypes"), seed=3)
    gen_state = random_tensors(gen["tensors"], gen.get("dtypes"), seed=4)
    path = write_fomm_checkpoint(tmp_path / "vox-cpk.pth.tar", kp_state, gen_state, legacy=True)
    assert not zipfile.is_zipfile(path)  # the 2019 legacy stream, as PyTorch 1.0 wrote it
    loaded = official.load_fomm(path)
    assert torch.equal(loaded.modules["kp_detector"].state_dict()["kp.weight"], kp_state["kp.weight"])
    assert torch.equal(loaded.modules["generator"].state_dict()["final.weight"], gen_state["final.weight"])
    assert loaded.notes == ["epoch 99"]
    # torch < 0.4.1 files lack num_batches_tracked; torch tolerates that under strict loading
    old_kp = {k: v for k, v in kp_state.items() if not k.endswith("num_batches_tracked")}
    old = write_fomm_checkpoint(tmp_path / "old.pth.tar", old_kp, gen_state)
    assert official.load_fomm(old).kind == "fomm"
    # a file missing the detector, and one with a wrong shape
    torch.save({"generator": gen_state}, tmp_path / "half.pth.tar")
    with pytest.raises(official.CheckpointError, match="needs 'kp_detector' and 'generator'"):
        official.load_fomm(tmp_path / "half.pth.tar")
    bad = dict(kp_state, **{"kp.weight": torch.zeros(11, 35, 7, 7)})
    write_fomm_checkpoint(tmp_path / "bad.pth.tar", bad, gen_state)
    with pytest.raises(official.CheckpointError, match=r"bad\.pth\.tar: kp_detector does not match"):
        official.load_fomm(tmp_path / "bad.pth.tar")


@pytest.mark.slow
def test_full_size_e4e_checkpoint_loads_strictly(tmp_path: Path) -> None:
    full = manifest("e4e_ffhq_encode")
    tensors = random_tensors(full["tensors"], full.get("dtypes"), seed=5)
    encoder = {k[len("encoder."):]: v for k, v in tensors.items() if k.startswith("encoder.")}
    decoder = {k[len("decoder."):]: v for k, v in tensors.items() if k.startswith("decoder.")}
    latent_avg = torch.randn(18, 512)
    path = write_e4e_checkpoint(tmp_path / "e4e_ffhq_encode.pt", encoder, latent_avg, decoder=decoder)
    del tensors, decoder
    assert zipfile.is_zipfile(path)
    loaded = official.load_e4e(path)
    model = loaded.modules["encoder"]
    assert isinstance(model, Encoder4Editing) and model.style_count == 18
    assert torch.equal(model.state_dict()["styles.17.linear.weight"], encoder["styles.17.linear.weight"])
    assert torch.equal(loaded.tensors["latent_avg"], latent_avg)
    assert "171 decoder.* entries not used" in loaded.notes[0]
    path.unlink()


def test_e4e_claims_and_damage_are_refused(tmp_path: Path) -> None:
    encoder = Encoder4Editing(50, "ir_se", 16)
    state = encoder.state_dict()
    psp = write_e4e_checkpoint(tmp_path / "psp.pt", state, torch.zeros(6, 512), stylegan_size=16,
                               encoder_type="GradualStyleEncoder")
    with pytest.raises(official.CheckpointError, match="encoder_type is 'GradualStyleEncoder'"):
        official.load_e4e(psp)
    size = write_e4e_checkpoint(tmp_path / "size.pt", state, torch.zeros(6, 512), stylegan_size=1024)
    with pytest.raises(official.CheckpointError, match=r"size\.pt: encoder does not match"):
        official.load_e4e(size)
    good = write_e4e_checkpoint(tmp_path / "good.pt", state, torch.zeros(6, 512), stylegan_size=16)
    assert official.load_e4e(good).modules["encoder"].style_count == 6
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:100_000])
    with pytest.raises(official.CheckpointError, match=r"cut\.pt: not a readable torch file"):
        official.load_e4e(cut)
    # a FOMM file opened as an encoder, and an encoder opened as FOMM
    detector, generator, _ = small_fomm()
    vox = write_fomm_checkpoint(tmp_path / "vox.pth", detector.state_dict(), generator.state_dict())
    with pytest.raises(official.CheckpointError, match="not an e4e checkpoint"):
        ck.open_checkpoint(vox, kind="e4e")
    with pytest.raises(official.CheckpointError, match="not a FOMM checkpoint"):
        ck.open_checkpoint(good, kind="fomm")


def test_safetensors_round_trip(tmp_path: Path) -> None:
    detector, generator, config = small_fomm()
    src = write_fomm_checkpoint(tmp_path / "small.pth.tar", detector.state_dict(), generator.state_dict())
    loaded = official.load_fomm(src, config)
    out = ck.save_safetensors(loaded, tmp_path / "small.safetensors")
    again = ck.open_checkpoint(out, kind="fomm")
    assert again.config == config and f"sha256 {loaded.sha256}" in again.notes[0]
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again.modules["kp_detector"](x)["value"], detector(x)["value"], atol=1e-6, rtol=0)
    with pytest.raises(official.CheckpointError, match="holds a fomm network, not stylegan2"):
        ck.open_checkpoint(out, kind="stylegan2")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(out.read_bytes()[:5000])
    with pytest.raises(official.CheckpointError, match="not a readable safetensors file"):
        ck.open_checkpoint(cut)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(official.CheckpointError, match="not a Recast engine file"):
        ck.open_checkpoint(tmp_path / "foreign.safetensors")


def test_restricted_unpickler_reads_numpy_scalars_and_sets() -> None:
    import numpy as np

    data = pickle.dumps({"gain": np.float64(0.5), "s": {"a"}, "od": __import__("collections").OrderedDict(a=1)},
                        protocol=2)
    out = official.RestrictedUnpickler(io.BytesIO(data)).load()
    assert out["gain"] == 0.5 and out["s"] == {"a"} and out["od"]["a"] == 1


def _zip_bomb(path: Path, records: dict[str, int]) -> Path:
    """A torch zip whose pickle is real (a small e4e-shaped dict) and whose extra records declare `records` bytes
    each: zeros deflated, so the file stays small while its directory claims the inflated size."""
    torch.save({"state_dict": {"encoder.w": torch.zeros(4)}, "opts": {}}, path)
    chunk = bytes(16 << 20)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        prefix = archive.namelist()[0].split("/")[0]
        for name, size in records.items():
            with archive.open(f"{prefix}/data/{name}", "w", force_zip64=True) as record:
                for start in range(0, size, len(chunk)):
                    record.write(chunk[: min(len(chunk), size - start)])
    return path


def test_zip_bomb_is_refused_before_it_inflates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .pt of deflated zeros declaring one huge tensor (or many large ones) is refused from the zip directory:
    torch.load never runs, so nothing is inflated (the probe saw 2.35 GB of memory for a 2.1 MB file)."""

    def never(*_: Any, **__: Any) -> Any:
        raise AssertionError("torch.load ran on a zip bomb")

    one = _zip_bomb(tmp_path / "one.pt", {"99": 300 << 20})
    many = _zip_bomb(tmp_path / "many.pt", {str(90 + i): 40 << 20 for i in range(3)})
    assert one.stat().st_size < 2 << 20 and many.stat().st_size < 1 << 20
    monkeypatch.setattr(torch, "load", never)
    with pytest.raises(official.CheckpointError, match=r"declares 314572800 bytes, more than any tensor"):
        official.load_e4e(one)
    with pytest.raises(official.CheckpointError, match=r"declares \d+ bytes inflated from \d+ on disk"):
        ck.open_checkpoint(many, kind="fomm")
    # a real torch.save zip passes the check: its records are stored, not deflated
    real = tmp_path / "real.pt"
    monkeypatch.undo()
    torch.save({"w": torch.zeros(1000, 1000)}, real)
    official.check_inflation(real)


class _StorageBytes:
    """Pickles as `torch.storage._load_from_bytes(blob)`, the way a tensor inside an NVlabs pickle does."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return torch.storage._load_from_bytes, (self.blob,)


def test_zip_bomb_inside_a_network_pickle_is_refused(tmp_path: Path) -> None:
    """An NVlabs pickle carries each storage as a torch zip in bytes; a bomb there is bounded the same way, and a
    numpy array cannot be reconstructed at a declared size."""
    bomb = _zip_bomb(tmp_path / "inner.pt", {"99": 300 << 20}).read_bytes()
    path = tmp_path / "bomb.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _StorageBytes(bomb)}, protocol=4))
    with pytest.raises(official.CheckpointError, match=r"bomb.pkl: record .* declares 314572800 bytes"):
        official.load_stylegan2_pkl(path)
    huge = tmp_path / "huge.pkl"
    plain = pickle.dumps({"G_ema": np.zeros(3)}, protocol=4)
    payload = plain.replace(b"K\x00\x85", b"J\x00\x00\x00\x40\x85")  # shape (0,) -> (2**30,)
    assert payload != plain
    huge.write_bytes(payload)
    with pytest.raises(official.CheckpointError, match="numpy reconstruct of shape"):
        official.load_stylegan2_pkl(huge)


def test_the_family_table_chooses_the_loader_of_an_official_file(tmp_path: Path) -> None:
    """Which upstream loader reads a file comes from engines/families.py: by the kind asked for, or by the suffix
    when none is asked; a file asked for as a kind its suffix cannot hold is refused before it is read."""
    from engines.families import official_family

    def kind_of(name: str, kind: str | None = None) -> str | None:
        found = official_family(name, kind)
        return found.kind if found is not None else None

    assert kind_of("ffhq.pkl") == "stylegan2" and kind_of("vox-cpk.pth.tar") == "fomm"
    assert kind_of("e4e_ffhq_encode.pt") == "e4e" and kind_of("VOX.PTH.TAR") == "fomm"
    assert kind_of("weights.pt", "fomm") == "fomm" and kind_of("e4e.pth.tar", "e4e") == "e4e"
    assert kind_of("weights.pt", "stylegan2") is None and kind_of("g.pkl", "fomm") is None
    assert kind_of("model.onnx") is None and kind_of("g.safetensors") is None  # ours: not an upstream file
    odd = tmp_path / "weights.pt"
    odd.write_bytes(b"not read")
    with pytest.raises(official.CheckpointError, match="read as e4e here and cannot hold stylegan2"):
        ck.open_checkpoint(odd, kind="stylegan2")
    with pytest.raises(official.CheckpointError, match="unknown checkpoint suffix"):
        ck.open_checkpoint(tmp_path / "model.onnx")
