"""bench.graph_networks: one command measures an imported network against the peers and writes its table."""
import json
import os

import pytest

pytest.importorskip("onnx")
if "libasan" in os.environ.get("LD_PRELOAD", ""):
    pytest.skip("ONNX Runtime is not run under AddressSanitizer", allow_module_level=True)
pytest.importorskip("onnxruntime")


def test_graph_network_table_has_ours_and_the_peers(tmp_path):
    from bench.graph_networks import main

    assert main(["--network", "squeezenet", "--batch", "1", "--rates", "0.5", "--rounds", "1",
                 "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "graph_squeezenet_b1.json").read_text())
    rows = {(r["engine"], r["variant"]): r for r in result["rows"]}
    assert ("ours", "dense") in rows and ("ours", "grid rate 0.5") in rows
    assert ("onnxruntime", "dense") in rows and ("onnxruntime", "exported grid rate 0.5") in rows
    assert rows[("ours", "grid rate 0.5")]["mac_reduction"] > 1.5
    assert all(r["min_ms"] > 0 and r["vs_best_dense_peer"] > 0 for r in result["rows"])
    text = (tmp_path / "graph_squeezenet_b1.md").read_text()
    assert "| ours | grid rate 0.5 |" in text and result["machine"]["cpu"] in text


def test_reductions_become_rates_that_reach_them(tmp_path):
    from bench.graph_networks import main, planned_macs, rate_for_reduction
    import perforated.onnx as pon
    from perforated.onnx.zoo import zoo_model

    convs = pon.load(zoo_model("squeezenet"), batch=1).convs()
    dense = planned_macs(convs, 0.0)
    assert dense == sum(c["macs"] for c in convs)
    for target in (2.0, 3.0):
        rate = rate_for_reduction(convs, target)
        assert 0 < rate < 1 and abs(dense / planned_macs(convs, rate) - target) < 0.05
    assert rate_for_reduction(convs, 2.0) < rate_for_reduction(convs, 3.0)
    assert main(["--network", "squeezenet", "--batch", "1", "--rates", "", "--reductions", "2", "--kind", "uniform",
                 "--rounds", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "graph_squeezenet_b1.json").read_text())
    ours = [r for r in result["rows"] if r["engine"] == "ours" and r["variant"] != "dense"]
    assert len(ours) == 1 and ours[0]["target_reduction"] == 2.0
    assert abs(ours[0]["mac_reduction"] - 2.0) < 0.05  # the built model's own count agrees with the bisection
    assert ours[0]["variant"].startswith("uniform rate ") and ours[0]["speedup"] > 0
    assert result["best_dense_peer"] in ("onnxruntime", "openvino")


def test_tables_show_the_graph_rows_and_a_graph_that_failed():
    from bench.report import graph_section

    row = {"engine": "ours", "variant": "uniform rate 0.5", "mac_reduction": 2.0, "speedup": 1.6, "min_ms": 10.0,
           "median_ms": 11.0, "vs_best_dense_peer": 1.3}
    peer = {"engine": "onnxruntime", "variant": "dense", "mac_reduction": 1.0, "speedup": None, "min_ms": 13.0,
            "median_ms": 13.5, "vs_best_dense_peer": 1.0}
    raw = {"graphs": [{"network": "resnet50", "batch": 16, "rounds": 5, "threads": 2, "rows": [row, peer],
                       "best_dense_peer": "onnxruntime"},
                      {"network": "densenet121", "error": "ModuleNotFoundError: No module named 'onnx'"}]}
    text = "\n".join(graph_section(raw))
    assert "## Imported ONNX graph: resnet50" in text and "Best dense peer: ONNX Runtime" in text
    assert "| ours | uniform rate 0.5 | 2.00x | 1.60x | 10.0 | 11.0 | 1.30x |" in text
    assert "| onnxruntime | dense | 1.00x | - | 13.0 | 13.5 | 1.00x |" in text
    assert "densenet121" in text and "Not measured: ModuleNotFoundError" in text
    assert graph_section({}) == []
