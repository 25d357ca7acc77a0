"""Records of hashed model files (sdlite.verified): an unchanged file is hashed once, any rewrite again."""

import json
import os
import shutil

import pytest

from sdlite import bundle, load_model, verified
from sdlite.errors import BundleError


REAL_SHA256 = bundle.file_sha256


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


def test_an_unchanged_file_is_hashed_once(tmp_path, records):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"weights" * 1000)
    spy = Spy()
    first = verified.sha256_of(model, spy)
    assert verified.sha256_of(model, spy) == first == bundle.file_sha256(model) and spy.calls == 1
    assert list(json.loads(records.read_text())) == [os.path.realpath(model)]


def test_a_rewrite_is_hashed_again_even_with_the_old_size_and_time(tmp_path, records):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"a" * 4096)
    before = model.stat()
    spy = Spy()
    verified.sha256_of(model, spy)
    model.write_bytes(b"b" * 4096)  # same size
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old modification time
    assert verified.sha256_of(model, spy) == bundle.file_sha256(model) and spy.calls == 2


def test_records_off_or_unreadable_only_cost_a_hash(tmp_path, records, monkeypatch):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"x" * 100)
    records.parent.mkdir(parents=True)
    records.write_text("{not json")
    spy = Spy()
    assert verified.sha256_of(model, spy) == bundle.file_sha256(model) and spy.calls == 1
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
    damaged = bytearray(decoder.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    decoder.write_bytes(bytes(damaged))
    with pytest.raises(BundleError, match="sha256"):
        load_model(copy).session("vae_decoder")
