"""The provider choice by name or alias, and OpenVINO as an onnxruntime plugin: its options, its one-line
errors (plugin missing, not loading, no device on this CPU), and, where the plugin runs, real sessions."""

import json
import sys
import types

import numpy as np
import onnxruntime as ort
import pytest

from sdlite import ProviderError, load_model, sessions
from sdlite.cli import main
from sdlite.errors import OptionError


@pytest.fixture
def fresh_plugin_state(monkeypatch):
    """Each test finds the plugin unregistered (the process-wide registration is state)."""
    monkeypatch.setattr(sessions, "_openvino_devices", [])


def test_providers_by_alias_or_name():
    assert sessions.resolve_providers("cpu") == [sessions.CPU]
    assert sessions.resolve_providers(["OpenVINO", "CPU"]) == [sessions.OPENVINO, sessions.CPU]
    assert sessions.resolve_providers(("openvino", {"precision": "f32"})) == [(sessions.OPENVINO, {"precision": "f32"})]
    assert sessions.resolve_providers(["CUDAExecutionProvider", "cpu"]) == [sessions.CUDA, sessions.CPU]
    assert sessions.resolve_providers(["openvino:F32", "cpu"]) == [(sessions.OPENVINO, {"precision": "f32"}), sessions.CPU]
    with pytest.raises(OptionError, match="unknown OpenVINO precision 'int4' in 'openvino:int4'; choose one of: auto, f32, bf16, f16"):
        sessions.resolve_providers("openvino:int4")
    with pytest.raises(OptionError, match="unknown provider 'cpu:f32'"):
        sessions.resolve_providers("cpu:f32")
    with pytest.raises(OptionError, match="unknown provider 'tpu'; choose one of: cpu, cuda, openvino"):
        sessions.resolve_providers(["tpu"])
    with pytest.raises(OptionError, match=r"\(name, dict\) pair"):
        sessions.resolve_providers([("openvino", "f32")])


def test_openvino_options_carry_precision_threads_and_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SDLITE_CACHE_DIR", str(tmp_path))
    auto = json.loads(sessions.openvino_options(None, None)["load_config"])["CPU"]
    assert "INFERENCE_PRECISION_HINT" not in auto and auto["CACHE_DIR"] == str(tmp_path / "openvino")
    chosen = sessions.openvino_options({"precision": "F32", "num_streams": 1}, 2)
    cpu = json.loads(chosen["load_config"])["CPU"]
    assert cpu == {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "2", "CACHE_DIR": str(tmp_path / "openvino")}
    assert chosen["num_streams"] == "1" and all(isinstance(v, str) for v in chosen.values())
    own = json.loads(sessions.openvino_options({"cache_dir": tmp_path / "x", "load_config": '{"CPU": {"PERF_COUNT": "YES"}}'}, None)["load_config"])
    assert own["CPU"]["CACHE_DIR"] == str(tmp_path / "x") and own["CPU"]["PERF_COUNT"] == "YES"
    with pytest.raises(OptionError, match="unknown OpenVINO precision 'int4'; choose one of: auto, f32, bf16, f16"):
        sessions.openvino_options({"precision": "int4"}, None)
    with pytest.raises(OptionError, match="load_config must be JSON"):
        sessions.openvino_options({"load_config": "{CPU"}, None)


def _builtin_absent(monkeypatch):
    """As on a plain onnxruntime: OpenVINO is not built in."""
    available = [p for p in ort.get_available_providers() if not p.startswith(sessions.OPENVINO)]
    monkeypatch.setattr(ort, "get_available_providers", lambda: available)


def test_missing_plugin_is_one_clear_line(monkeypatch, fresh_plugin_state, vaelight, tmp_path, capsys):
    _builtin_absent(monkeypatch)
    monkeypatch.setitem(sys.modules, "onnxruntime_ep_openvino", None)  # import fails as if not installed
    with pytest.raises(ProviderError, match=r"pip install 'sdlite\[openvino\]'"):
        sessions.check_providers("openvino")
    with pytest.raises(ProviderError, match="not installed"):
        load_model(vaelight.path, providers="openvino").session("vae_decoder")
    image = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(image)
    assert main(["compress", str(image), "--model", str(vaelight.path), "--providers", "openvino", "--out-dir", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "OpenVINOExecutionProvider needs its plugin" in err[0]
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())  # no work started


def test_plugin_that_fails_to_load_or_finds_no_device(monkeypatch, fresh_plugin_state):
    _builtin_absent(monkeypatch)
    plugin = types.ModuleType("onnxruntime_ep_openvino")
    plugin.get_library_path = lambda: "/nowhere/libonnxruntime_providers_openvino_plugin.so"
    monkeypatch.setitem(sys.modules, "onnxruntime_ep_openvino", plugin)

    def refuse(name, path):
        raise RuntimeError(f"Failed to load {path}\nsecond line")

    monkeypatch.setattr(ort, "register_execution_provider_library", refuse, raising=False)
    with pytest.raises(ProviderError, match="did not load into onnxruntime") as failed:
        sessions.check_providers(["openvino"])
    assert "\n" not in str(failed.value)
    monkeypatch.setattr(ort, "register_execution_provider_library", lambda name, path: None, raising=False)
    monkeypatch.setattr(ort, "get_ep_devices", lambda: [], raising=False)  # what an AMD EPYC got (measurements.md)
    with pytest.raises(ProviderError, match="offers no CPU device on this machine .*Intel processors only"):
        sessions.check_providers(["openvino"])


def _openvino_runs() -> str | None:
    """Why real OpenVINO sessions cannot run here, or None when they can."""
    try:
        sessions.check_providers("openvino")
    except ProviderError as exc:
        return str(exc)
    return None


def test_real_openvino_sessions_match_the_cpu_provider(vaelight, tmp_path, monkeypatch):
    why = _openvino_runs()
    if why:
        pytest.skip(f"OpenVINO cannot run here: {why}")
    monkeypatch.setenv("SDLITE_CACHE_DIR", str(tmp_path))
    latent = np.random.default_rng(0).normal(size=(1, 4, 16, 24)).astype(np.float32)
    cpu = load_model(vaelight.path, providers="cpu", threads=2).decode(latent)
    f32 = load_model(vaelight.path, providers=[("openvino", {"precision": "f32"})], threads=2)
    assert f32.session("vae_decoder").get_providers()[0] == sessions.OPENVINO
    assert np.abs(f32.decode(latent) - cpu).max() < 1e-3  # same precision, another library's kernels
    auto = load_model(vaelight.path, providers="openvino", threads=2).decode(latent)  # bf16 where the CPU has AMX
    assert np.abs(auto - cpu).mean() * 127.5 < 1.0  # within one 8-bit level on average
    assert any((tmp_path / "openvino").iterdir())  # compiled networks cached for the next process
