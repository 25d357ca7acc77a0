"""sdlite.pth: torch state dicts read without torch, as hostile input (the pinned TAE releases' .pth files)."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bench.fuzz import seed_pth_archives
from sdlite import pth
from sdlite.errors import BundleError

from .conftest import SHARED


@pytest.fixture(scope="module")
def seed():
    return seed_pth_archives(np.random.default_rng(0))[0]


def _rewrite(seed: bytes, change_pickle=None, *, drop=None, method=zipfile.ZIP_STORED) -> bytes:
    members = {}
    with zipfile.ZipFile(io.BytesIO(seed)) as archive:
        for name in archive.namelist():
            members[name] = archive.read(name)
    if change_pickle:
        members["archive/data.pkl"] = change_pickle(members["archive/data.pkl"])
    if drop:
        members.pop(drop)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


def _read(tmp_path: Path, data: bytes):
    path = tmp_path / "w.pth"
    path.write_bytes(data)
    return pth.read_state_dict(path, max_bytes=1 << 20)


def test_a_state_dict_is_read(seed, tmp_path):
    tensors = _read(tmp_path, seed)
    assert list(tensors) == ["1.weight", "2.weight", "3.weight"] and all(t.shape == (2, 3) and t.dtype == np.float32 for t in tensors.values())


@pytest.mark.skipif(not (SHARED / "models" / "taef2-pth").is_dir(), reason="../shared/models/taef2-pth is not here")
def test_the_published_taef2_files_read_as_torch_reads_them():
    torch = pytest.importorskip("torch")
    path = SHARED / "models" / "taef2-pth" / "taef2_decoder.pth"
    ours = pth.read_state_dict(path, max_bytes=1 << 28)
    theirs = torch.load(path, map_location="cpu", weights_only=True)
    assert list(ours) == list(theirs)
    assert all(np.array_equal(ours[k], theirs[k].float().numpy()) for k in ours)


@pytest.mark.parametrize("swap", [b"os\nsystem", b"builtins\neval", b"numpy\nndarray", b"torch\nLongStorage"])
def test_a_global_a_state_dict_does_not_use_is_refused(seed, tmp_path, swap):
    data = _rewrite(seed, lambda p: p.replace(b"torch._utils\n_rebuild_tensor_v2", swap, 1))
    with pytest.raises(BundleError, match="names|reads only"):
        _read(tmp_path, data)


def test_a_memo_slot_far_away_costs_nothing(seed, tmp_path):
    """LONG_BINPUT 2**31-1: the C unpickler would allocate a 16 GB memo array first."""
    data = _rewrite(seed, lambda p: p[:31] + b"r\xff\xff\xff\x7f" + p[33:])
    started = time.perf_counter()
    assert len(_read(tmp_path, data)) == 3  # a valid pickle still: the slot is just a dict entry
    assert time.perf_counter() - started < 2


def test_tensors_sharing_storage_bytes_are_refused(seed, tmp_path):
    data = _rewrite(seed, lambda p: p.replace(b"X\x01\x00\x00\x001", b"X\x01\x00\x00\x000", 1))
    with pytest.raises(BundleError, match="share storage bytes"):
        _read(tmp_path, data)


def test_strided_views_are_refused(seed, tmp_path):
    data = _rewrite(seed, lambda p: p.replace(b"(K\x03K\x01t", b"(K\x01K\x02t", 1))
    with pytest.raises(BundleError, match="only contiguous tensors"):
        _read(tmp_path, data)


def test_a_missing_storage_and_compressed_members_are_refused(seed, tmp_path):
    with pytest.raises(BundleError, match="storage 0 is missing"):
        _read(tmp_path, _rewrite(seed, drop="archive/data/0"))
    with pytest.raises(BundleError, match="compressed"):
        _read(tmp_path, _rewrite(seed, method=zipfile.ZIP_DEFLATED))


def test_a_big_endian_archive_is_refused(seed, tmp_path):
    members = {}
    with zipfile.ZipFile(io.BytesIO(seed)) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    members["archive/byteorder"] = b"big"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    with pytest.raises(BundleError, match="big"):
        _read(tmp_path, out.getvalue())


def test_garbage_and_oversized_files_are_bundle_errors(tmp_path):
    with pytest.raises(BundleError, match="not a readable .pth"):
        _read(tmp_path, b"PK\x03\x04 not really a zip")
    path = tmp_path / "big.pth"
    with open(path, "wb") as handle:
        handle.truncate(2 << 20)
    with pytest.raises(BundleError, match="over the"):
        pth.read_state_dict(path, max_bytes=1 << 20)


def test_a_fuzz_finding_a_truncated_opcode_is_a_bundle_error():
    """bench fuzz --families pth, seed 0, case 9758: the pure-Python unpickler's struct.error escaped."""
    path = Path(__file__).resolve().parent / "findings" / "pth-truncated-opcode.pth"
    with pytest.raises(BundleError, match="not a readable .pth"):
        pth.read_state_dict(path, max_bytes=1 << 20)
