"""Disk size of a fresh runtime-only install (pip install sdlite into a new venv, no extras)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def measure(project: Path) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        venv = Path(folder) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        empty = _size(venv)
        subprocess.run([str(python), "-m", "pip", "install", "-q", str(project)], check=True)
        (site,) = venv.glob("lib/python*/site-packages")
        packages = {}
        for entry in site.iterdir():
            if entry.is_dir() and not entry.name.endswith((".dist-info", "__pycache__")):
                packages[entry.name] = _size(entry)
        frozen = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout.split()
        return {"venv_bytes": _size(venv) - empty, "packages": dict(sorted(packages.items(), key=lambda kv: -kv[1])), "freeze": frozen}


def run(out: str) -> str:
    """Measure, write install_size.json into out, and return a one-line summary."""
    report = measure(Path(__file__).resolve().parents[1])  # the repository (bench/ is not installed)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "install_size.json").write_text(json.dumps(report, indent=1))
    top = ", ".join(f"{name} {size / 1e6:.0f} MB" for name, size in list(report["packages"].items())[:6])
    return f"runtime-only install: {report['venv_bytes'] / 1e6:.0f} MB added to a new venv ({top}); {' '.join(report['freeze'])}"
