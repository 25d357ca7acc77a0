"""Hostile and awkward command-line inputs (the third hostile-input probe): every problem is one line in the
batch, which goes on and writes the good files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdlite.cli import main


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    y, x = np.mgrid[0:32, 0:48]
    Image.fromarray(np.stack([x * 4, y * 6, x + y], -1).astype(np.uint8)).save(images / "good.png")
    os.mkfifo(images / "fifo.png")
    (images / "loop.png").symlink_to(images / "loop.png")
    (images / "zero.png").symlink_to("/dev/zero")
    return images


def test_fifos_loops_and_devices_in_a_folder_are_reported_and_the_good_file_written(folder, vaelight, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["compress", str(folder), "--out-dir", str(out), "--model", str(vaelight.path), "--target-bytes", "200"])
    err = capsys.readouterr().err
    assert code == 1 and (out / "good.sdz").is_file()
    for name in ("fifo.png", "loop.png", "zero.png"):
        assert f"{name}: error:" in err, err


def test_an_unlistable_folder_is_reported_and_the_batch_goes_on(folder, vaelight, tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self == locked:
            raise PermissionError(13, "Permission denied")
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    code = main(["compress", str(locked), str(folder / "good.png"), "--out-dir", str(tmp_path / "out"), "--model", str(vaelight.path),
                 "--target-bytes", "200"])
    assert code == 1 and (tmp_path / "out" / "good.sdz").is_file()
    assert "locked: error:" in capsys.readouterr().err


def test_an_output_that_cannot_be_written_is_one_line(folder, vaelight, tmp_path, capsys):
    code = main(["compress", str(folder / "good.png"), "-o", str(tmp_path / ("x" * 300 + ".sdz")), "--model", str(vaelight.path)])
    err = capsys.readouterr().err
    assert code == 1 and "error: cannot write" in err and "Traceback" not in err


def test_a_long_input_name_can_still_be_written(folder, vaelight, tmp_path):
    long = folder / ("p" * 240 + ".png")
    (folder / "good.png").rename(long)
    assert main(["compress", str(long), "--out-dir", str(tmp_path / "out"), "--model", str(vaelight.path), "--target-bytes", "200"]) == 0
    assert (tmp_path / "out" / ("p" * 240 + ".sdz")).is_file()


def test_model_auto_with_no_bundles_is_one_usage_error(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SDLITE_MODELS_DIR", str(tmp_path / "empty"))
    assert main(["compress", str(folder / "good.png"), "--model", "auto", "--bpp", "0.3"]) == 2
    assert capsys.readouterr().err.count("error:") == 1
