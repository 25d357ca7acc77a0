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
