"""The README's snippets run as written (in a scratch folder with models/taesd, photo.png and photos/)."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import KODAK, ROOT, SHARED

TAESD = SHARED / "models" / "taesd"
pytestmark = pytest.mark.slow


def _snippet(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- readme-snippet: {name} -->\n```python\n(.*?)```", text, re.S)
    assert match, f"README has no snippet {name!r}"
    return match.group(1)


@pytest.fixture
def scratch(tmp_path):
    if not (TAESD / "vae_decoder" / "model.onnx").is_file() or not (KODAK / "kodim01.png").is_file():
        pytest.skip(f"TAESD or the Kodak images absent under {SHARED}")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "taesd").symlink_to(TAESD)
    (tmp_path / "photo.png").symlink_to(KODAK / "kodim01.png")
    (tmp_path / "photos").mkdir()
    for number in ("03", "04", "07"):
        (tmp_path / "photos" / f"kodim{number}.png").symlink_to(KODAK / f"kodim{number}.png")
    return tmp_path


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env, timeout=900)


def test_pillow_snippet(scratch):
    result = _run(_snippet("pillow"), scratch)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("SDZ (768, 512)") and "sd1" in result.stdout
    assert (scratch / "photo.sdz").stat().st_size <= 6000 and (scratch / "thumbnail.png").is_file()


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray not installed (pip install -e .[ray])")
def test_ray_snippet(scratch):
    result = _run(_snippet("ray"), scratch)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "3"
    assert list((scratch / "photos-sdz").glob("*.parquet"))
