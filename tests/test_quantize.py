import numpy as np

from sdlite.methods.palette.quantize import SEED_OFFSET, SEED_STEP, dequantize, quantize


def test_codes_cover_0_to_255_and_count_clipping():
    z = np.array([-100.0, -23.5, -23.1, 0.0, 23.1, 23.5, 100.0], dtype=np.float32)
    q = quantize(z)
    assert q.codes.dtype == np.uint8
    assert q.codes.tolist()[0] == 0 and q.codes.tolist()[-1] == 255
    assert q.clipped == 4  # -100, -23.5, 23.5, 100 round outside +-127.5 * 0.18215
    assert q.codes[3] == 128  # rint(127.5) rounds half to even


def test_round_trip_error_is_half_a_step_inside_range():
    z = np.random.default_rng(1).uniform(-23, 23, 10_000).astype(np.float32)
    back = dequantize(quantize(z).codes)
    assert back.dtype == np.float32
    assert np.max(np.abs(back - z)) <= SEED_STEP / 2 + 1e-5


def test_representable_range():
    assert dequantize(np.array([0, 255], dtype=np.uint8)).tolist() == [
        np.float32(-SEED_OFFSET * SEED_STEP),
        np.float32((255 - SEED_OFFSET) * SEED_STEP),
    ]
