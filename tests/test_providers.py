import warnings

import numpy as np
import onnxruntime as ort
import pytest

from sdlite import ProviderError, load_model
from sdlite.errors import OptionError
from sdlite import sessions


def test_default_prefers_cuda_only_when_available():
    expected = ["CUDAExecutionProvider", "CPUExecutionProvider"] if "CUDAExecutionProvider" in ort.get_available_providers() else ["CPUExecutionProvider"]
    assert sessions.default_providers() == expected
    assert sessions.resolve_providers("CPUExecutionProvider") == ["CPUExecutionProvider"]


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA attaches on this machine")
def test_warns_or_raises_when_cuda_does_not_attach(vaelight):
    path = str(vaelight.path / "vae_decoder" / "model.onnx")
    with pytest.warns(RuntimeWarning, match="did not attach"):
        session = sessions.create_session(path, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert session.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(ProviderError):
        sessions.create_session(path, ["CUDAExecutionProvider", "CPUExecutionProvider"], strict=True)


def test_sessions_are_cached_per_file_providers_and_threads(vaelight):
    path = str(vaelight.path / "vae_decoder" / "model.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = sessions.cached_session(path, ["CPUExecutionProvider"], threads=1)
        b = sessions.cached_session(path, ["CPUExecutionProvider"], threads=1)
        c = sessions.cached_session(path, ["CPUExecutionProvider"], threads=2)
    assert a is b and a is not c
    model = load_model(vaelight.path, providers=["CPUExecutionProvider"], threads=1)
    assert model.session("vae_decoder") is a


def test_caller_supplied_session_is_used(vaelight):
    own = ort.InferenceSession(str(vaelight.path / "vae_decoder" / "model.onnx"), providers=["CPUExecutionProvider"])
    model = load_model(vaelight.path, sessions={"vae_decoder": own})
    assert model.session("vae_decoder") is own


def test_a_slow_session_build_does_not_block_other_sessions(monkeypatch, tmp_path):
    import threading

    release, started = threading.Event(), threading.Event()
    built = []

    def fake_create(path, providers=None, *, threads=None, strict=False, settings=None):
        if path.endswith("slow.onnx"):
            started.set()
            assert release.wait(60), "the slow build was never released"
        built.append(path)
        return object()

    monkeypatch.setattr(sessions, "create_session", fake_create)
    monkeypatch.setattr(sessions, "_cache", {})
    slow, fast = str(tmp_path / "slow.onnx"), str(tmp_path / "fast.onnx")
    results = {}
    worker = threading.Thread(target=lambda: results.setdefault("slow", sessions.cached_session(slow, ["CPUExecutionProvider"])))
    worker.start()
    assert started.wait(60)
    try:
        # the slow build is in progress and holds its own key only: this returns at once
        results["fast"] = sessions.cached_session(fast, ["CPUExecutionProvider"])
        assert results["fast"] is sessions.cached_session(fast, ["CPUExecutionProvider"])
    finally:
        release.set()
        worker.join(60)
    assert results["slow"] is sessions.cached_session(slow, ["CPUExecutionProvider"])
    assert sorted(built) == [fast, slow]  # each built once


def test_session_defaults_follow_the_component():
    # VAE sessions run without onnxruntime's CPU arena (measured: less memory, same speed); the U-Net keeps it
    # but skips the layout rewrites (measured: 10 s of its session build, no speed-up)
    assert sessions.default_settings("bundle/vae_decoder/model.onnx")["cpu_mem_arena"] is False
    assert sessions.default_settings("bundle/vae_encoder/model.onnx")["cpu_mem_arena"] is False
    assert sessions.default_settings("bundle/vae_decoder/model.onnx")["layout_optimization"] is True
    assert sessions.default_settings("bundle/unet/model.opt.onnx") == dict(sessions.SESSION_SETTINGS, layout_optimization=False)
    assert sessions.default_settings("elsewhere/model.onnx") == sessions.SESSION_SETTINGS
    with pytest.raises(OptionError, match="known: cpu_mem_arena"):
        sessions.session_options(settings={"arena": False})


def test_sessions_are_built_and_cached_per_memory_settings(vaelight):
    path = str(vaelight.path / "vae_decoder" / "model.onnx")
    default = sessions.cached_session(path, ["CPUExecutionProvider"], threads=1)
    assert default.get_session_options().enable_cpu_mem_arena is False
    assert default.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    arena = sessions.cached_session(path, ["CPUExecutionProvider"], threads=1, settings={"cpu_mem_arena": True})
    assert arena is not default and arena.get_session_options().enable_cpu_mem_arena is True
    assert sessions.cached_session(path, ["CPUExecutionProvider"], threads=1, settings={"cpu_mem_arena": False}) is default
    latent = np.random.default_rng(0).normal(size=(1, 4, 8, 8)).astype(np.float32)
    feed = {default.get_inputs()[0].name: latent}
    np.testing.assert_array_equal(default.run(None, feed)[0], arena.run(None, feed)[0])
    chosen = load_model(vaelight.path, providers=["CPUExecutionProvider"], threads=1, session_settings={"cpu_mem_arena": True})
    assert chosen.session("vae_decoder") is arena
    assert load_model(vaelight.path, providers=["CPUExecutionProvider"], threads=1).session("vae_decoder") is default


@pytest.mark.parametrize("settings, match", [({"arena": True}, "unknown session settings"), ({"prepacking": "off"}, "True or False"),
                                             (["prepacking"], "must be a dict")])
def test_bad_session_settings_name_the_choices(vaelight, settings, match):
    with pytest.raises(OptionError, match=match):
        load_model(vaelight.path, session_settings=settings)


def test_unet_sessions_skip_layout_rewrites(tiny_bundle):
    unet = sessions.cached_session(str(tiny_bundle / "unet" / "model.onnx"), ["CPUExecutionProvider"], threads=1)
    assert unet.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    assert unet.get_session_options().enable_cpu_mem_arena is True
