import os
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
    model = load_model(vaelight.path, session_overrides={"vae_decoder": own})
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


def test_session_defaults_follow_the_component(tmp_path):
    # large VAEs run without onnxruntime's CPU arena (measured: less memory, same speed), small ones keep it
    # (measured: faster); the U-Net keeps it but skips the layout rewrites (10 s of its build, no speed-up)
    for component in ("vae_encoder", "vae_decoder", "unet"):
        (tmp_path / "big" / component).mkdir(parents=True)
        with open(tmp_path / "big" / component / "model.onnx", "wb") as f:
            f.truncate(sessions.LARGE_NETWORK_BYTES)  # sparse: no disk used
        (tmp_path / "small" / component).mkdir(parents=True)
        (tmp_path / "small" / component / "model.onnx").write_bytes(b"x" * 1000)
    big, small = tmp_path / "big", tmp_path / "small"
    assert sessions.default_settings(big / "vae_decoder" / "model.onnx")["cpu_mem_arena"] is False
    assert sessions.default_settings(big / "vae_encoder" / "model.onnx")["cpu_mem_arena"] is False
    assert sessions.default_settings(small / "vae_decoder" / "model.onnx") == sessions.SESSION_SETTINGS
    assert sessions.default_settings(big / "vae_decoder" / "model.onnx")["layout_optimization"] is True
    for folder in (big, small):
        assert sessions.default_settings(folder / "unet" / "model.onnx") == dict(sessions.SESSION_SETTINGS, layout_optimization=False)
    assert sessions.default_settings(tmp_path / "model.onnx") == sessions.SESSION_SETTINGS
    with pytest.raises(OptionError, match="known: cpu_mem_arena"):
        sessions.session_options(settings={"arena": False})


def test_sessions_are_built_and_cached_per_memory_settings(vaelight):
    path = str(vaelight.path / "vae_decoder" / "model.onnx")
    default = sessions.cached_session(path, ["CPUExecutionProvider"], threads=1)  # VAElight's decoder: small, arena on
    assert default.get_session_options().enable_cpu_mem_arena is True
    assert default.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    no_arena = sessions.cached_session(path, ["CPUExecutionProvider"], threads=1, settings={"cpu_mem_arena": False})
    assert no_arena is not default and no_arena.get_session_options().enable_cpu_mem_arena is False
    assert sessions.cached_session(path, ["CPUExecutionProvider"], threads=1, settings={"cpu_mem_arena": True}) is default
    latent = np.random.default_rng(0).normal(size=(1, 4, 8, 8)).astype(np.float32)
    feed = {default.get_inputs()[0].name: latent}
    np.testing.assert_array_equal(default.run(None, feed)[0], no_arena.run(None, feed)[0])
    chosen = load_model(vaelight.path, providers=["CPUExecutionProvider"], threads=1, session_settings={"cpu_mem_arena": False})
    assert chosen.session("vae_decoder") is no_arena
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


def test_a_model_file_replaced_in_place_gets_a_new_session(vaelight, tmp_path):
    """A re-export into the same folder replaces the files: the cache must not hand out the old network."""
    import shutil

    path = tmp_path / "model.onnx"
    shutil.copy(vaelight.path / "vae_decoder" / "model.onnx", path)
    first = sessions.cached_session(str(path), ["CPUExecutionProvider"], threads=1)
    assert sessions.cached_session(str(path), ["CPUExecutionProvider"], threads=1) is first
    replacement = tmp_path / "new.onnx"
    shutil.copy(vaelight.path / "vae_encoder" / "model.onnx", replacement)
    os.replace(replacement, path)  # what installing a re-exported bundle does to each file
    second = sessions.cached_session(str(path), ["CPUExecutionProvider"], threads=1)
    assert second is not first and second.get_inputs()[0].name != first.get_inputs()[0].name
