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
