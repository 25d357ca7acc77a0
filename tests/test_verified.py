"""Records of hashed model files (sdlite.verified): an unchanged read-only file is hashed once, any rewrite
again, a writable one at every load; records that are not this user's own private file are ignored."""

import json
import mmap
import os
import shutil
import threading

import pytest

from sdlite import bundle, files, load_model, verified
from sdlite.errors import BundleError


REAL_SHA256 = files.file_sha256


class Spy:
    def __init__(self):
        self.calls = 0

    def __call__(self, path):
        self.calls += 1
        return REAL_SHA256(path)


@pytest.fixture
def records(tmp_path, monkeypatch):
    monkeypatch.setenv(verified.CACHE_DIR_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / verified.RECORDS_FILE


def _read_only(path):
    path.chmod(0o444)
    return path


def test_an_unchanged_file_is_hashed_once(tmp_path, records):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"weights" * 1000)
    _read_only(model)
    spy = Spy()
    first = verified.sha256_of(model, spy)
    assert verified.sha256_of(model, spy) == first == files.file_sha256(model) and spy.calls == 1
    assert list(json.loads(records.read_text())) == [os.path.realpath(model)]


def test_a_rewrite_is_hashed_again_even_with_the_old_size_and_time(tmp_path, records):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"a" * 4096)
    before = _read_only(model).stat()
    spy = Spy()
    verified.sha256_of(model, spy)
    model.chmod(0o644)
    model.write_bytes(b"b" * 4096)  # same size
    _read_only(model)
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old modification time
    assert verified.sha256_of(model, spy) == files.file_sha256(model) and spy.calls == 2


def test_records_off_or_unreadable_only_cost_a_hash(tmp_path, records, monkeypatch):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"x" * 100)
    _read_only(model)
    records.parent.mkdir(parents=True)
    records.write_text("{not json")
    spy = Spy()
    assert verified.sha256_of(model, spy) == files.file_sha256(model) and spy.calls == 1
    assert verified.sha256_of(model, spy) and spy.calls == 1  # the damaged file was replaced by good records
    monkeypatch.setenv(verified.CACHE_DIR_ENV, "off")
    assert verified.cache_dir() is None
    verified.sha256_of(model, spy)
    verified.sha256_of(model, spy)
    assert spy.calls == 3


def test_a_bundle_is_hashed_once_and_a_changed_file_still_fails(tiny_bundle, tmp_path, records, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle, copy)
    spy = Spy()
    monkeypatch.setattr(bundle, "file_sha256", spy)
    bundle.check_files(bundle.read_bundle(copy), "vae_decoder")
    hashed = spy.calls
    bundle.check_files(bundle.read_bundle(copy), "vae_decoder")
    assert hashed > 0 and spy.calls == hashed
    decoder = copy / "vae_decoder" / "model.onnx"
    assert not decoder.stat().st_mode & 0o222  # the export writes model files read-only
    decoder.chmod(0o644)
    damaged = bytearray(decoder.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    decoder.write_bytes(bytes(damaged))
    with pytest.raises(BundleError, match="sha256"):
        load_model(copy).session("vae_decoder")


def test_a_file_changed_through_a_live_shared_mapping_is_never_vouched_for(tmp_path, records):
    """Writes through a mapping made before hashing keep inode, size and both times: only a file nobody
    can write to may be served from a record, so this (writable) one is hashed at every load."""
    model = tmp_path / "model.onnx"
    model.write_bytes(bytes(1 << 16))
    with open(model, "r+b") as handle, mmap.mmap(handle.fileno(), 0) as mapping:
        mapping[0] = 1
        spy = Spy()
        first = verified.sha256_of(model, spy)
        before = model.stat()
        mapping[100] = 7  # the same dirty page: the kernel updates no time
        after = model.stat()
        assert (before.st_mtime_ns, before.st_ctime_ns, before.st_size) == (after.st_mtime_ns, after.st_ctime_ns, after.st_size)
        mapping.flush()
        second = verified.sha256_of(model, spy)
    assert second != first and second == files.file_sha256(model) and spy.calls == 2
    assert not records.exists()  # nothing was recorded for a writable file


def _forge(records, model, digest):
    records.parent.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(model)
    status = os.stat(key)
    identity = [status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns]
    records.write_text(json.dumps({key: {"identity": identity, "sha256": digest}}))


def test_forged_or_hostile_records_are_ignored(tmp_path, records):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"real weights")
    _read_only(model)
    real = files.file_sha256(model)
    forged = "0" * 64
    _forge(records, model, forged)
    records.chmod(0o666)  # anyone could have written it
    assert verified.sha256_of(model, Spy()) == real
    _forge(records, model, forged)
    records.chmod(0o600)
    assert verified.sha256_of(model, Spy()) == forged  # this user's own private records are trusted (documented)
    records.unlink()
    records.write_text("[" * 100_000 + "]" * 100_000)  # nesting that json cannot parse
    assert verified.sha256_of(model, Spy()) == real
    records.unlink()
    records.write_bytes(b" " * (verified.MAX_RECORDS_BYTES + 1))
    assert verified.sha256_of(model, Spy()) == real
    records.unlink()
    os.symlink(tmp_path / "elsewhere.json", records)
    (tmp_path / "elsewhere.json").write_text(json.dumps({}))
    assert verified.sha256_of(model, Spy()) == real
    assert json.loads((tmp_path / "elsewhere.json").read_text()) == {}  # never written through the link either


def test_a_fifo_in_place_of_the_records_does_not_hang(tmp_path, records):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"w" * 10)
    _read_only(model)
    records.parent.mkdir(parents=True)
    os.mkfifo(records)
    result = []
    worker = threading.Thread(target=lambda: result.append(verified.sha256_of(model, Spy())), daemon=True)
    worker.start()
    worker.join(30)
    assert result == [files.file_sha256(model)]


def test_a_manifest_less_bundle_is_hashed_once_per_file_version(vaelight, records, monkeypatch):
    """read_bundle of a folder without a manifest names it by its files' hashes: once, then from the records
    (choose_model and the decoder search read every bundle they can reach)."""
    if any(p.stat().st_mode & 0o222 for p in vaelight.path.rglob("*.onnx")):
        pytest.skip("the VAElight files are writable here: the records vouch only for read-only files")
    spy = Spy()
    monkeypatch.setattr(bundle, "file_sha256", spy)
    first = bundle.read_bundle(vaelight.path).model_id
    hashed = spy.calls
    assert hashed == 2 and bundle.read_bundle(vaelight.path).model_id == first and spy.calls == hashed
