import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sdlite import BitstreamError, OptionError, decompress_latents, info
from sdlite import bitstream as bs
from sdlite import methods
from sdlite.codec import compress_latents
from sdlite.methods import entropy
from sdlite.methods.entropy import coder, context, params, probability, rate, transform

MODEL_ID = "a1b2c3d4e5f60718"


def _latents(shape=(4, 12, 18), seed=0):
    rng = np.random.default_rng(seed)
    smooth = rng.normal(0, 4, shape).cumsum(axis=2) / 3
    return (smooth + rng.normal(0, 1.5, shape)).astype(np.float32)


def _reconstruction_of(plan):
    steps = transform.group_steps(plan.step_q, plan.gains_q, plan.levels, plan.shape[0])
    groups, first = [], 0
    for symbols, group_step in zip(plan.symbols, steps):
        means = np.array(plan.means_q[first : first + len(symbols)], dtype=np.float64)[:, None, None] / params.MEAN_SCALE
        groups.append(means + symbols * group_step[:, None, None])
        first += len(symbols)
    return transform.recompose(groups, plan.shape, plan.levels)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    latents=hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9)),
                       elements=st.floats(-40, 40, width=32)),
    step=st.floats(0.05, 8.0),
    levels=st.sampled_from(transform.LEVELS),
)
def test_symbols_round_trip_exactly(latents, step, levels):
    plan = entropy.plan_for_step(latents, step, levels=levels)
    decoded = entropy.decode(plan.params().pack(), coder.encode_payload(plan), latents.shape, bs.FORMAT_VERSION)
    assert decoded.shape == latents.shape
    assert np.array_equal(decoded, _reconstruction_of(plan).astype(np.float32))


@pytest.mark.parametrize("levels", transform.LEVELS)
def test_transform_is_invertible_for_odd_sizes(levels):
    z = _latents((3, 7, 11)).astype(np.float64)
    groups = transform.decompose(z, levels)
    assert [g.shape for g in groups] == transform.group_shapes(z.shape, levels)
    assert np.allclose(transform.recompose(groups, z.shape, levels), z)


def test_error_is_bounded_by_the_step():
    z = _latents()
    data = compress_latents(z, model_id=MODEL_ID, method="entropy", quality=90)
    back = decompress_latents(data)[0]
    step = rate.quality_to_step(90) * max(transform.DEFAULT_BAND_GAINS)
    assert np.max(np.abs(back - z)) <= 4 * step  # two Haar levels: each value mixes 16 half-step errors
    assert info(data)["method"] == "entropy"


def test_quality_is_monotonic_in_size():
    z = _latents((4, 24, 32))
    sizes = [len(compress_latents(z, model_id=MODEL_ID, method="entropy", quality=q)) for q in (1, 10, 25, 50, 75, 90, 100)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


@pytest.mark.parametrize("target", [600, 1200, 2500])
def test_target_bytes_is_respected_within_five_percent(target):
    z = _latents((4, 32, 48), seed=3)
    data = compress_latents(z, model_id=MODEL_ID, method="entropy", target_bytes=target)
    assert 0.95 * target <= len(data) <= target, len(data)


def test_unreachable_target_names_the_minimum():
    with pytest.raises(OptionError, match="smallest stream"):
        compress_latents(_latents(), model_id=MODEL_ID, method="entropy", target_bytes=70)


@pytest.mark.parametrize("bad", [0, 101, 5.5, True])
def test_quality_range_is_checked(bad):
    with pytest.raises(OptionError, match="quality"):
        compress_latents(_latents(), model_id=MODEL_ID, method="entropy", quality=bad)


def test_corrupted_payloads_raise_bitstream_error():
    data = compress_latents(_latents(), model_id=MODEL_ID, method="entropy")
    header, payload = bs.unpack(data)
    rng = np.random.default_rng(0)
    for trial in range(60):
        params = bytearray(header.params)
        body = bytearray(payload)
        if trial % 2:
            params[rng.integers(len(params))] = rng.integers(256)
        else:
            body[rng.integers(len(body))] ^= 1 << int(rng.integers(8))
        if trial % 7 == 0:
            body = body[: int(rng.integers(len(body) + 1))]
        stream = bs.pack(bs.Header(header.method, MODEL_ID, header.width, header.height, header.latent_shape, params=bytes(params)), bytes(body))
        try:
            z = decompress_latents(stream)
        except BitstreamError:
            continue
        assert z.shape == (1, 4, 12, 18) and np.isfinite(z).all()


def test_same_latents_same_bytes_across_thread_counts(monkeypatch):
    """numpy/BLAS thread settings must not change the encoder's integer decisions."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import numpy as np, sys; from tests.test_entropy import _latents, MODEL_ID; "
        "from sdlite.codec import compress_latents; "
        "sys.stdout.write(compress_latents(_latents((4,40,56)), model_id=MODEL_ID, method='entropy').hex())"
    )
    root = Path(__file__).resolve().parent.parent
    outputs = set()
    for threads in ("1", "2"):
        env = {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PATH": "/usr/bin:/bin"}
        result = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        outputs.add(result.stdout)
    assert len(outputs) == 1


@pytest.mark.parametrize("height,width", [(1, 1), (1, 7), (6, 1), (5, 9), (8, 8)])
def test_contexts_only_look_at_earlier_wavefronts(height, width):
    """The encoder evaluates contexts on whole planes; the decoder front by front. That is the same
    computation only if every neighbour a context reads was decoded on an earlier front."""
    layout = context.Layout(height, width)
    front_of = np.full(layout.zero + 1, -1)  # the always-zero cell counts as decoded before anything
    for t, front in enumerate(layout.fronts):
        front_of[front] = t
    coded = np.sort(np.concatenate(layout.fronts))
    assert np.array_equal(coded, np.arange(height * width))  # each position exactly once
    for neighbours in (layout.spatial, layout.residual_neighbours):
        assert np.all(front_of[neighbours] < front_of[np.arange(height * width)])


def test_residual_tables_are_centred_on_the_fractional_prediction():
    tables = probability.residual_tables([0, 100, 200, 255], -6, 7)
    assert tables.shape == (4, context.FRACTIONS, 14)
    assert np.allclose(tables.sum(axis=2), 1.0) and (tables > 0).all()
    zero, half = 6, context.FRACTIONS // 2
    for row in tables[1:]:
        assert row[0].argmax() == zero and np.isclose(row[0][zero - 1], row[0][zero + 1])  # centred on r = 0
        assert np.isclose(row[half][zero], row[half][zero + 1])  # halfway between r = 0 and r = 1
        assert row[half + 1].argmax() == zero + 1
    widths = [np.sum(row[0] * np.abs(np.arange(-6, 8))) for row in tables]
    assert widths == sorted(widths)  # a larger decay byte spreads the distribution


def test_predictions_split_into_integer_and_fraction():
    feats = np.array([[3, -5, 0, 7]])
    below, fraction = context.predict(feats, np.array([context.WEIGHT_SCALE // 2]))  # weight 0.5
    assert below.tolist() == [1, -3, 0, 3] and fraction.tolist() == [4, 4, 0, 4]  # 1.5, -2.5, 0, 3.5


def test_crafted_huge_alphabets_are_refused_before_building_tables():
    import zlib

    z = _latents((16, 64, 64))
    plan = entropy.plan_for_step(z, 1.0)
    raw = bytearray(plan.params().raw())
    offset = params.GLOBAL.size + (4 * 16 + 7) // 8  # the one group's range: -2000..2000 over 64 planes of 32x32
    params.RANGE.pack_into(raw, offset, -2000, 2000)
    header = bs.Header(methods.ENTROPY, MODEL_ID, 512, 512, z.shape, params=zlib.compress(bytes(raw)))
    with pytest.raises(BitstreamError, match="decoding work, over the limit"):
        decompress_latents(bs.pack(header, coder.encode_payload(plan)))


@pytest.mark.parametrize("channels", [4, 16, 32])
def test_target_search_needs_few_plans_and_lands_in_the_window(channels, monkeypatch):
    """The size model proposes the steps: a target of a few kB costs at most 3 Plans (regula falsi from
    quality 50's step built 4-8 on these latents and on Kodak's) and lands in [_SEARCH_STOP, 1] of the budget;
    near the smallest stream (sizes flat in the step) it still ends within the target's tolerance."""
    z = _latents((channels, 48, 64), seed=channels)
    built = []
    real = rate.plan_for_step
    monkeypatch.setattr(rate, "plan_for_step", lambda *a, **k: built.append(a[1]) or real(*a, **k))
    smallest = real(z, rate.STEP_SEARCH_COARSEST).estimated_bytes()
    largest = real(z, rate.STEP_SEARCH_FINEST).estimated_bytes()
    for fraction in (0.05, 0.1, 0.2, 0.4, 0.7):
        budget = int(smallest + fraction * (largest - smallest))
        built.clear()
        plan = rate.search_budget(z, budget)
        assert rate._SEARCH_STOP * budget <= plan.estimated_bytes() <= budget
        assert len(built) <= 3, (fraction, built)
    for fraction in (0.002, 0.01):
        budget = int(smallest + fraction * (largest - smallest))
        plan = rate.search_budget(z, budget)
        assert (1 - rate.TARGET_TOLERANCE) * budget <= plan.estimated_bytes() <= budget


def test_size_model_follows_the_plans_size():
    z = _latents((16, 32, 48), seed=5)
    model = rate._size_model(z)
    for step in (0.1, 0.4, 1.6, 6.4):
        ratio = np.exp(model(np.log(step))) / entropy.plan_for_step(z, step).estimated_bytes()
        assert 0.7 < ratio < 1.3, (step, ratio)
    assert model(np.log(0.1)) > model(np.log(0.4)) > model(np.log(1.6)) > model(np.log(6.4))


def test_entropy_bits_agree_for_narrow_and_wide_rows():
    rng = np.random.default_rng(0)
    narrow = rng.integers(-3, 4, (5, 200))
    wide = narrow.copy()
    wide[0, 0] = 10**6  # one far value: the sorted-runs path
    for symbols in (narrow, wide):
        expected = []
        for row in symbols:
            counts = np.unique(row, return_counts=True)[1]
            expected.append(-(counts * np.log2(counts / row.size)).sum())
        assert rate._entropy_bits(symbols) == pytest.approx(expected)


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 2, 3), (4, 3, 5), (16, 2, 2)])
def test_target_search_on_tiny_latents_fits_or_names_the_minimum(shape):
    """Where sizes hardly move with the step (parameters dominate), every budget either fits or is refused
    with the smallest stream named; the search never loops past its iterations or leaves the step range."""
    z = _latents(shape, seed=sum(shape))
    smallest = rate.plan_for_step(z, rate.STEP_SEARCH_COARSEST).estimated_bytes()
    for budget in range(max(1, smallest - 3), smallest + 40, 3):
        try:
            plan = rate.search_budget(z, budget)
        except OptionError as exc:
            assert "smallest stream" in str(exc) and budget < smallest + 8
            continue
        assert plan.estimated_bytes() <= budget
        assert rate.STEP_SEARCH_FINEST * transform.STEP_SCALE <= plan.step_q <= rate.STEP_SEARCH_COARSEST * transform.STEP_SCALE


def test_target_search_on_huge_latents_is_a_clear_error():
    """Latents no step can code (a hostile compress_latents input) under a target: one OptionError naming the
    problem (the size model clips symbols as the Plan does, so its histograms stay bounded)."""
    z = np.full((4, 16, 24), 1e6, np.float32)
    z[:, ::2] *= -1
    with pytest.raises(OptionError, match="too large to code"):
        compress_latents(z, model_id=MODEL_ID, method="entropy", target_bytes=20000)


def _decays_by_definition(residuals, fractions, bins, rmin, rmax):
    """Every (base, slope) tried one by one: the ideal code length of a plane's residuals under the tables
    of decay_bytes(base, slope), the first minimum in (base, slope) order."""
    logs = np.log2(probability.residual_tables(np.arange(256), rmin, rmax))  # (256, FRACTIONS, alphabet)
    chosen = []
    for r, f, b in zip(residuals, fractions, bins):
        best = None
        for base in range(256):
            for slope in range(probability.MAX_SLOPE + 1):
                q = probability.decay_bytes(base, slope)[b]
                bits = -float(np.sum(logs[q, f, r - rmin]))
                if best is None or bits < best[2] - 1e-9 * abs(bits):
                    best = (base, slope, bits)
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("spread", [0.0, 1.5, 40.0])
def test_choose_decays_is_the_exhaustive_minimum(spread):
    """The encoder's decay search (shifted slices of one padded row per bin) picks what trying every base and
    slope picks, with the same code length, for peaked, ordinary and wide residuals; a plane with no
    residual variation (spread 0) has many equal minima and gets the first."""
    rng = np.random.default_rng(7)
    planes, n = 3, 400
    residuals = np.round(rng.laplace(0, spread, (planes, n))).astype(np.int64) if spread else np.zeros((planes, n), np.int64)
    rmin, rmax = int(min(residuals.min(), -1)), int(max(residuals.max(), 1))
    fractions = rng.integers(0, context.FRACTIONS, (planes, n))
    bins = np.minimum(np.abs(residuals) // 2 + rng.integers(0, 2, (planes, n)), context.N_BINS - 1)  # busier bins, wider residuals
    got = probability.choose_decays(residuals, fractions, bins, rmin, rmax)
    want = _decays_by_definition(residuals, fractions, bins, rmin, rmax)
    assert [g[:2] for g in got] == [w[:2] for w in want]
    np.testing.assert_allclose([g[2] for g in got], [w[2] for w in want], rtol=1e-9)


@pytest.mark.parametrize("rows_at_once", [1, 37, 1 << 18])
def test_decoding_in_runs_of_steps_gives_the_same_latents(monkeypatch, rows_at_once):
    """The decoder makes its flat row indices for runs of whole coder steps (context.index_rows); however short
    the runs (one row: every step alone, longer than the run), the latents are the Plan's exactly."""
    z = _latents((6, 20, 28))
    plan = entropy.plan_for_step(z, 0.4)
    payload = coder.encode_payload(plan)
    monkeypatch.setattr(context, "ROWS_AT_ONCE", rows_at_once)
    decoded = entropy.decode(plan.params().pack(), payload, z.shape, bs.FORMAT_VERSION)
    assert np.array_equal(decoded, _reconstruction_of(plan).astype(np.float32))


def test_index_rows_covers_every_step_once(monkeypatch):
    layout = context.layout(9, 13, context.BLOCK_SIDE)
    plane_ids, positions, bounds = context.schedule(layout, [0, 1, 3])
    for limit in (1, 50, 10**6):
        monkeypatch.setattr(context, "ROWS_AT_ONCE", limit)
        runs = list(context.index_rows(layout, plane_ids, positions, bounds))
        assert [s for _, _, steps in runs for s in steps] == list(range(len(bounds) - 1))
        for first, index, steps in runs:
            assert first == bounds[steps[0]] and len(index.own) == bounds[steps[-1] + 1] - first
            assert len(steps) == 1 or len(index.own) <= limit
            stride = layout.zero + 1
            assert np.array_equal(index.own, plane_ids[first:first + len(index.own)] * stride + positions[first:first + len(index.own)])


@pytest.mark.parametrize("height, width, planes, wide", [(9, 13, [0, 1, 3], False), (64, 96, list(range(32)), False),
                                                         (40, 50, [2, 5], True), (1, 1, [0], False)])
def test_schedule_is_the_sorted_order_of_its_definition(monkeypatch, height, width, planes, wide):
    """The coding order: every (plane, position) of the coded planes sorted by step = front + plane, then plane,
    then position (a three-key sort written out), with each step's start; also when the sort keys do not fit
    16 bits (forced here by widening the blocks' fronts)."""
    layout = context.layout(height, width, context.BLOCK_SIDE)
    if wide:
        monkeypatch.setattr(layout, "front_of", layout.front_of * 1000)
        monkeypatch.setattr(layout, "order", np.argsort(layout.front_of, kind="stable"))
    plane_ids = np.repeat(np.asarray(planes, dtype=np.int64), layout.zero)
    positions = np.tile(np.arange(layout.zero, dtype=np.int64), len(planes))
    steps = layout.front_of[positions] + plane_ids
    order = np.lexsort((positions, plane_ids, steps))
    got_planes, got_positions, bounds = context.schedule(layout, planes)
    assert np.array_equal(got_planes, plane_ids[order]) and np.array_equal(got_positions, positions[order])
    assert bounds[0] == 0 and bounds[-1] == len(order) and np.all(np.diff(bounds) > 0)
    assert all(len(set(steps[order][a:b].tolist())) == 1 for a, b in zip(bounds[:-1], bounds[1:]))
    assert len(bounds) - 1 == len(set(steps.tolist()))


@pytest.mark.parametrize("planes", [[0], [0, 1, 2, 3, 4, 5], [1, 4, 7]])
def test_batched_predictor_fit_is_the_per_plane_fit(monkeypatch, planes):
    """fit_planes_weights (one product for the normal equations of a group, one solve per weight count) gives
    fit_weights' weights plane by plane, byte for byte, on wide symbols too; past its exact-sum bound it falls
    back to the per-plane sums."""
    rng = np.random.default_rng(len(planes))
    layout = context.layout(13, 17, context.BLOCK_SIDE)
    for spread in (1.0, 300.0):
        flat = layout.empty(max(planes) + 1)
        smooth = rng.normal(0, spread, (len(flat), layout.zero)).cumsum(axis=1) / 4
        flat[:, : layout.zero] = np.clip(np.rint(smooth), -context.SYMBOL_LIMIT, context.SYMBOL_LIMIT)
        coded = np.array(planes)
        feats = context.plane_features(flat, coded, layout)
        want = [context.fit_weights(feats[context.feature_columns(p), i], flat[p, : layout.zero]) for i, p in enumerate(coded)]
        got = context.fit_planes_weights(feats, flat[coded, : layout.zero], coded)
        assert [w.tolist() for w in got] == [w.tolist() for w in want]
        assert [len(w) for w in got] == [context.n_weights(p) for p in planes]
    monkeypatch.setattr(context, "fit_weights", lambda f, t: np.full(len(f), 7, np.int8))
    monkeypatch.setattr(context, "SYMBOL_LIMIT", 2 ** 30)  # n * limit^2 past 2^53: the per-plane path
    assert all((w == 7).all() for w in context.fit_planes_weights(feats, flat[coded, : layout.zero], coded))
    assert context.fit_planes_weights(feats[:, :0], flat[:0, : layout.zero], coded[:0]) == []


def test_a_singular_system_gets_zero_weights_alone():
    grams = np.stack([np.eye(3) * 4.0, -1e-3 * np.eye(3)])  # the second is 0 once regularised
    rhs = np.array([[4.0, -4.0, 2.0], [1.0, 1.0, 1.0]])
    assert context._solve_weights(grams, rhs).tolist() == [[32, -32, 16], [0, 0, 0]]

