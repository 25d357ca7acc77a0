"""The README's code blocks run as written (in a scratch folder with models/taesd, models/vaelight, photo.png,
photos/, ../shared and .venv), and every block is either run here or says why not."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import KODAK, ROOT, SHARED

TAESD = SHARED / "models" / "taesd"
VAELIGHT = SHARED / "models" / "vaelight"
BLOCK = re.compile(r"(?:<!-- (readme-snippet: [\w-]+|readme: run|readme: skip \(([^)]+)\)) -->\n)?```(\w*)\n(.*?)```", re.S)


def _blocks() -> list[tuple[str | None, str | None, str, str]]:
    """(marker, skip reason, language, code) of every fenced block of the README."""
    return [m.groups() for m in BLOCK.finditer((ROOT / "README.md").read_text())]


def test_every_block_is_run_or_says_why_not():
    for marker, _, language, code in _blocks():
        assert language in ("python", "sh", "text"), f"a README block has no language: {code[:80]!r}"
        if language != "text":
            assert marker, f"a README {language} block is neither run by the tests nor marked skip (reason): {code[:80]!r}"


def _snippet(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- readme-snippet: {name} -->\n```python\n(.*?)```", text, re.S)
    assert match, f"README has no snippet {name!r}"
    return match.group(1)


@pytest.fixture
def scratch(tmp_path):
    if not (TAESD / "vae_decoder" / "model.onnx").is_file() or not (KODAK / "kodim01.png").is_file():
        pytest.skip(f"TAESD or the Kodak images absent under {SHARED}")
    if not (VAELIGHT / "vae_decoder" / "model.onnx").is_file():
        pytest.skip(f"VAElight absent under {SHARED}")
    work = tmp_path / "work"
    (work / "models").mkdir(parents=True)
    (work / "models" / "taesd").symlink_to(TAESD)
    (work / "models" / "vaelight").symlink_to(VAELIGHT)
    (work / "photo.png").symlink_to(KODAK / "kodim01.png")
    (work / "photos").mkdir()
    for number in ("03", "04", "07"):
        (work / "photos" / f"kodim{number}.png").symlink_to(KODAK / f"kodim{number}.png")
    (tmp_path / "shared").symlink_to(SHARED)  # ../shared, as beside the repository
    (work / ".venv").symlink_to(sys.prefix)  # .venv/bin/python and .venv/bin/sdlite, as after the install step
    return work


def _env() -> dict:
    """The tests' environment, but with the scratch folder's models/ as the models folder (as a reader's would be)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("SDLITE_MODELS_DIR", None)
    return env


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = _env()
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env, timeout=900)


RUN_BLOCKS = [(language, code) for marker, _, language, code in _blocks() if marker == "readme: run"]


@pytest.mark.slow
@pytest.mark.parametrize("language, code", RUN_BLOCKS, ids=[f"{lang}-{i}" for i, (lang, _) in enumerate(RUN_BLOCKS)])
def test_block_runs_as_written(language, code, scratch):
    if language == "python":
        result = _run(code, scratch)
    else:
        env = _env()
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=scratch, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_pillow_snippet(scratch):
    result = _run(_snippet("pillow"), scratch)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("SDZ (768, 512)") and "sd1" in result.stdout
    assert (scratch / "photo.sdz").stat().st_size <= 6000 and (scratch / "thumbnail.png").is_file()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray not installed (pip install -e .[ray])")
def test_ray_snippet(scratch):
    result = _run(_snippet("ray"), scratch)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "3"
    assert list((scratch / "photos-sdz").glob("*.parquet"))
