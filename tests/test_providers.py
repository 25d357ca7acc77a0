import warnings

import onnxruntime as ort
import pytest

from sdlite import ProviderError, load_model
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

    def fake_create(path, providers=None, *, threads=None, strict=False):
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
