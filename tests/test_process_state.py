"""Process-wide state sdlite keeps is bounded and emptied by clear_cache()."""

import warnings

import numpy as np

import sdlite
from sdlite import codec, fetch
from sdlite.methods import entropy


def test_clear_cache_empties_the_last_plan_and_the_warned_pairs():
    z = np.random.default_rng(0).normal(0, 4, (4, 64, 64)).astype(np.float32)
    entropy.estimate_bytes(z, quality=50)
    assert len(entropy._last_plan) == 1
    codec._warned_pairs.add(("a" * 16, "b" * 16))
    fetch._digests[("x", 1)] = "0" * 64
    sdlite.clear_cache()
    assert not entropy._last_plan and not codec._warned_pairs and not fetch._digests


def test_the_warned_pairs_stay_bounded(monkeypatch):
    monkeypatch.setattr(codec, "_warned_pairs", set())
    for i in range(codec._WARNED_PAIRS_KEPT * 3):
        with codec._warned_lock:
            if len(codec._warned_pairs) >= codec._WARNED_PAIRS_KEPT:
                codec._warned_pairs.clear()
            codec._warned_pairs.add((f"{i:016x}", "0" * 16))
    assert len(codec._warned_pairs) <= codec._WARNED_PAIRS_KEPT
