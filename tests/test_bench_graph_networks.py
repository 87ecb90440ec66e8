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
