"""export.sensitivity's rule on fake networks: each node adds a known error when int8, errors add up."""

from __future__ import annotations

import pytest

from export.sensitivity import choose, int8_nodes

NODES = [("Conv_0", "Conv"), ("Add_1", "Add"), ("Conv_2", "Conv"), ("Mul_3", "Mul"), ("Conv_4", "Conv"),
         ("Conv_5", "Conv"), ("Add_6", "Add"), ("Conv_7", "Conv"), ("Conv_8", "Conv"), ("Conv_9", "Conv")]
ALONE = {"Conv_0": 0.5, "Add_1": 4.0, "Conv_2": 0.1, "Mul_3": 0.2, "Conv_4": 2.0,
         "Conv_5": 0.3, "Add_6": 0.4, "Conv_7": 0.05, "Conv_8": 0.05, "Conv_9": 0.1}


class FakeQuantizer:
    """quantize() records which nodes a path holds as int8; added_error() sums their errors."""

    def __init__(self):
        self.int8 = {}
        self.calls = 0

    def quantize(self, path, only, exclude):
        self.calls += 1
        chosen = [name for name, _ in NODES] if only is None else list(only)
        self.int8[path.name] = [name for name in chosen if name not in exclude]
        path.write_bytes(b"model")

    def added_error(self, path):
        assert path.is_file()
        return sum(ALONE[name] for name in self.int8[path.name])

    def nodes_of(self, path):
        assert path.is_file()
        return [(name, op_type) for name, op_type in NODES if name in self.int8[path.name]]


def _choose(fake, baseline, folder, **options):
    return choose(fake.quantize, fake.added_error, baseline, folder, nodes_of=fake.nodes_of, **options)


def test_fewest_most_sensitive_nodes_float_within_budget(tmp_path):
    fake = FakeQuantizer()
    total = sum(ALONE.values())  # 7.7
    # baseline 100, budget 0.04: at most 4.0 added; float Add_1 (4.0) leaves 3.7
    choice = _choose(fake, 100.0, tmp_path, budget=0.04, max_share=0.5)
    assert choice.float_nodes == ("Add_1",) and choice.within_budget
    assert choice.all_int8_mse == pytest.approx(total) and choice.mixed_mse == pytest.approx(total - 4.0)
    assert [row[0] for row in choice.sensitivity][:3] == ["Add_1", "Conv_4", "Conv_0"]  # worst first
    # a tighter budget (1.0 added): Add_1, Conv_4, Conv_0 and Add_6 float leave 0.8 (three leave 1.2)
    (tmp_path / "tight").mkdir()
    tight = _choose(fake, 100.0, tmp_path / "tight", budget=0.01, max_share=0.5)
    assert tight.float_nodes == ("Add_1", "Conv_4", "Conv_0", "Add_6") and tight.mixed_mse == pytest.approx(0.8)
    assert [p.name for p in (tmp_path / "tight").iterdir()] == [tight.model.name]  # trial models are removed, the chosen one kept
    assert fake.int8[tight.model.name] == [name for name, _ in NODES if name not in tight.float_nodes]


def test_all_int8_when_within_budget(tmp_path):
    fake = FakeQuantizer()
    choice = _choose(fake, 1000.0, tmp_path, budget=0.05)
    assert choice.float_nodes == () and choice.within_budget and choice.mixed_mse == choice.all_int8_mse


def test_edges_first_and_sensitivity_only_when_they_miss(tmp_path):
    fake = FakeQuantizer()
    edges = ("Conv_0", "Add_1")
    enough = _choose(fake, 100.0, tmp_path, always_float=edges, budget=0.04, max_share=0.5)
    assert enough.float_nodes == edges and enough.mixed_mse == pytest.approx(3.2) and enough.sensitivity == () and fake.calls == 1
    assert enough.model.name == "float-0.onnx" and enough.model.is_file()
    more = _choose(fake, 100.0, tmp_path, always_float=edges, budget=0.02, max_share=0.5)
    assert more.float_nodes == ("Conv_0", "Add_1", "Conv_4") and more.mixed_mse == pytest.approx(1.2) and more.within_budget
    assert {row[0] for row in more.sensitivity} == {name for name, _ in NODES} - set(edges)  # the edges are not measured


def test_a_network_too_large_for_a_pass_per_node_stops_after_the_edges(tmp_path):
    fake = FakeQuantizer()
    choice = _choose(fake, 100.0, tmp_path, always_float=("Conv_0",), budget=0.02, measure_nodes=False)
    assert choice.float_nodes == ("Conv_0",) and not choice.within_budget and choice.sensitivity == () and fake.calls == 1


def test_budget_missed_at_the_cap_is_reported(tmp_path, caplog):
    fake = FakeQuantizer()
    choice = _choose(fake, 10.0, tmp_path, budget=0.01, max_share=0.2)
    assert not choice.within_budget and choice.float_nodes == ("Add_1", "Conv_4")  # the cap: 2 of 10
    assert choice.to_manifest()["within_budget"] is False
    assert "misses its budget" in caplog.text


def test_no_candidates_and_bad_budget(tmp_path):
    class Nothing(FakeQuantizer):  # a network with nothing the quantizer changes: its copy is the fp32 network
        def quantize(self, path, only, exclude):
            super().quantize(path, only, exclude)
            self.int8[path.name] = []

    fake = Nothing()
    choice = _choose(fake, 1.0, tmp_path, budget=0.01)
    assert choice.float_nodes == () and choice.within_budget and choice.mixed_mse == 0.0 and fake.calls == 1
    assert choice.sensitivity == () and choice.model.is_file()
    with pytest.raises(ValueError, match="budget must be > 0"):
        _choose(FakeQuantizer(), 1.0, tmp_path, budget=0)


def test_int8_nodes_are_those_reading_dequantized_data():
    pytest.importorskip("onnx")
    from onnx import helper

    nodes = [helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["x"], name="dq"),
             helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
             helper.make_node("Relu", ["y"], ["r"], name="relu"),  # reads float: not a candidate
             helper.make_node("QuantizeLinear", ["r", "s", "z"], ["rq"], name="q"),
             helper.make_node("DequantizeLinear", ["rq", "s", "z"], ["r2"], name="dq2"),
             helper.make_node("Add", ["r2", "x"], ["out"], name="add")]
    graph = helper.make_graph(nodes, "g", [], [])
    assert int8_nodes(graph) == [("conv", "Conv"), ("add", "Add")]
