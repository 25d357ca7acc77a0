"""The runtime must work where torch & co. cannot even be imported."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BLOCKER = textwrap.dedent(
    """
    import sys
    class _Block:
        BLOCKED = {"torch", "diffusers", "transformers", "optimum", "accelerate"}
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"blocked in this test: {name}")
            return None
    sys.meta_path.insert(0, _Block())
    """
)


def _run(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300)


def test_import_is_light_and_torch_free():
    result = _run(
        """
        import sys, sdlite
        heavy = {"torch", "diffusers", "transformers", "optimum", "onnxruntime"} & set(sys.modules)
        assert not heavy, heavy
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_compress_decompress_without_torch(tmp_path, vaelight, kodak):
    result = _run(
        f"""
        import sys, sdlite
        data = sdlite.compress({str(kodak / "kodim03.png")!r}, model={str(vaelight.path)!r})
        image = sdlite.decompress(data, model={str(vaelight.path)!r})
        print("decoded", image.size, len(data))
        try:
            import torch
        except ImportError:
            print("torch blocked")
        assert not {{"torch", "diffusers", "transformers", "optimum"}} & set(sys.modules)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "decoded (768, 512)" in result.stdout and "torch blocked" in result.stdout


def test_no_sdlite_module_imports_torch_and_none_imports_a_cycle():
    """Each runtime module imports alone, first, in a fresh interpreter with torch & co. blocked: an import
    cycle or a stray heavy import fails here whatever order other tests import things in."""
    modules = []
    for path in sorted((ROOT / "sdlite").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if parts[-1] != "__main__" and parts != ("sdlite", "ray"):  # sdlite.ray needs the ray extra
            modules.append(".".join(parts))
    code = "import importlib, sys\nfor name in %r:\n    importlib.import_module(name)\n    for other in [m for m in sys.modules if m.startswith('sdlite')]: del sys.modules[other]\nprint('ok', len(%r))" % (modules, modules)
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert f"ok {len(modules)}" in result.stdout and "sdlite.methods.entropy.coder" in modules


def test_the_runtime_wheel_holds_no_benchmark_code():
    import tomllib

    from setuptools import find_packages

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    shipped = find_packages(str(ROOT), include=config["include"])
    assert "sdlite" in shipped and "sdlite.methods.entropy" in shipped and "export" in shipped
    assert not [p for p in shipped if p.startswith(("bench", "tests"))], shipped
    runtime = (ROOT / "sdlite").rglob("*.py")
    assert not [p for p in runtime if "import bench" in p.read_text() or "from bench" in p.read_text()]
