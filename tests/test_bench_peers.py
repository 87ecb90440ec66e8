"""The dense peers of the benchmark harness (bench.peers, bench.peer_networks) and the peer columns of
its tables: best-peer selection, interleaved rounds, columns generated from what was measured, and
ONNX Runtime / OpenVINO computing what our library computes. Nothing here depends on timing values."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from bench import conv_layers, measure, peers, report

# a frozen bench.tables result (a real CPU run, copied from results/ on 2026-12-07): regenerating
# results/ does not change what these rendering tests read
COMMITTED = Path(__file__).resolve().parent / "data" / "tables_snapshot.json"
HAVE = peers.available()
needs_ort = pytest.mark.skipif(not HAVE["onnxruntime"], reason="onnxruntime is not installed")
needs_ov = pytest.mark.skipif(not (HAVE["openvino"] and HAVE["onnxruntime"]),
                              reason="openvino (and onnxruntime to compare with) not installed")


def _t(seconds):
    return {"median": seconds, "min": seconds, "max": seconds, "iqr_rel": 0.0, "runs": 3}


# --- selection and ordering -----------------------------------------------------------------------

def test_best_peer_is_the_fastest_timed_one():
    assert peers.best_peer({"onnxruntime": 2.0, "openvino": 1.5, "torch_cl": None}) == ("openvino", 1.5)
    assert peers.best_peer({"onnxruntime": None, "openvino": None}) is None
    assert peers.best_peer({}) is None
    # a tie goes to the peer listed first in ORDER, whatever the dict order
    assert peers.best_peer({"torch_nchw": 1.0, "onnxruntime": 1.0}) == ("onnxruntime", 1.0)


def test_ordered_and_labels():
    assert peers.ordered(["torch_cl", "zzz", "openvino", "onnxruntime", "openvino"]) == \
        ["onnxruntime", "openvino", "torch_cl", "zzz"]
    assert peers.label("openvino") == "OpenVINO" and peers.label("zzz") == "zzz"
    assert peers.medians({"a": {"time": _t(0.5), "note": ""}, "b": {"time": None, "note": "x"}}) == \
        {"a": 0.5, "b": None}


# --- rounds ---------------------------------------------------------------------------------------

def test_alternating_rounds_reverse_the_order_every_other_round():
    seen = []
    calls = [lambda i=i: seen.append(i) for i in range(3)]
    times = measure.alternating(calls, 3)
    assert seen == [0, 1, 2, 2, 1, 0, 0, 1, 2]
    assert [len(t) for t in times] == [3, 3, 3] and all(s >= 0 for t in times for s in t)
    with pytest.raises(ValueError):
        measure.alternating(calls, 0)


def test_time_together_runs_peers_in_our_rounds_and_drops_a_failing_one():
    seen = []

    def broken():
        raise RuntimeError("no such kernel")

    ours = [lambda: seen.append("dense"), lambda: seen.append("perf")]
    timed = {"onnxruntime": (lambda: seen.append("ort"), "ort note"),
             "openvino": (broken, "ov note"),
             "torch_nchw": (None, "not installed (pip install torch)")}
    summaries, results = peers.time_together(ours, timed, 2)
    assert seen == ["dense", "perf", "ort",  # warm-ups
                    "dense", "perf", "ort", "ort", "perf", "dense"]
    assert [s["runs"] for s in summaries] == [2, 2]
    assert results["onnxruntime"]["time"]["runs"] == 2 and results["onnxruntime"]["note"] == "ort note"
    assert results["openvino"] == {"note": "failed: RuntimeError: no such kernel", "time": None}
    assert results["torch_nchw"] == {"note": "not installed (pip install torch)", "time": None}


def test_without_peer_packages_the_conv_peers_say_so(monkeypatch):
    monkeypatch.setattr(peers, "available", lambda: {"onnxruntime": None, "openvino": None, "torch": None})
    x = np.zeros((1, 2, 5, 5), np.float32)
    w = np.zeros((3, 2, 3, 3), np.float32)
    got = peers.conv_peers(x, w, 1, 1, 1, 1)
    assert list(got) == list(peers.ORDER) and all(r is None for r, _ in got.values())
    assert got["openvino"][1] == "not installed (pip install openvino onnx)"
    summaries, results = peers.time_together([lambda: None], got, 1)
    assert len(summaries) == 1 and all(r["time"] is None for r in results.values())


# --- table columns --------------------------------------------------------------------------------

def _with_peers(raw, interleaved, openvino=True):
    """The committed measurements with a known set of peers: ONNX Runtime at our dense time x 1.1,
    both torch layouts slower, and (openvino=True) OpenVINO fastest on NIN only; the committed peer
    entries (whatever run produced them) are replaced, so the tests do not depend on that run."""
    raw = copy.deepcopy(raw)
    for net in raw["networks"]:
        ort = net["dense"]["time"]["median"] * 1.1
        net["peers"] = {"onnxruntime": {"note": "onnxruntime 1, all optimisations", "time": _t(ort)},
                        "torch_nchw": {"note": "torch 2, NCHW", "time": _t(ort * 1.5)},
                        "torch_cl": {"note": "torch 2, channels-last", "time": _t(ort * 1.3)}}
        if openvino:
            factor = 0.5 if net["network"] == "nin" else 2.0
            net["peers"]["openvino"] = {"note": "openvino 9, CPU plugin", "time": _t(ort * factor),
                                        "max_rel_diff": 1e-6}
        net["peers_interleaved"] = interleaved
    return raw


@pytest.fixture
def raw():
    """The committed bench.tables measurements, peers interleaved, OpenVINO fastest on NIN only."""
    return _with_peers(json.loads(COMMITTED.read_text()), interleaved=True)


def test_peer_table_columns_come_from_the_measurements(raw):
    header, rows = report.peer_table(raw)
    names = peers.ordered(raw["networks"][0]["peers"])
    assert header[3:3 + len(names)] == [f"{peers.label(k)}, s" for k in names]
    assert "OpenVINO, s" in header and "best dense peer" in header
    plans = max(len(n["rows"]) for n in raw["networks"])
    assert header[-plans:] == [f"plan {i + 1} vs best peer (mult. red.)" for i in range(plans)]
    assert all(len(r) == len(header) for r in rows)
    by_net = {r[0]: dict(zip(header, r)) for r in rows}
    for net in raw["networks"]:
        cells = by_net[net["network"]]
        times = {k: v["time"]["median"] for k, v in net["peers"].items() if v.get("time")}
        best = min(times, key=times.get)
        assert cells["best dense peer"] == peers.label(best)
        dense = net["dense"]["time"]["median"]
        assert cells["ours dense vs best peer (speed)"] == f"{times[best] / dense:.2f}x"
        first = net["rows"][0]
        assert cells["plan 1 vs best peer (mult. red.)"] == \
            f"{times[best] / first['measured']['time']['median']:.2f}x ({first['mult_reduction']:.2f})"
    assert by_net["nin"]["best dense peer"] == "OpenVINO"


def test_table1_and_table3_name_the_best_peer(raw):
    h1, rows1 = report.table1(raw)
    nin = dict(zip(h1, next(r for r in rows1 if r[0] == "nin")))
    assert nin["best dense peer, ms / image"].endswith("(OpenVINO)")
    h3, rows3 = report.table3(raw)
    col = h3.index("speedup vs best dense peer")
    assert all(r[col].endswith("(OpenVINO)") for r in rows3 if r[0] == "nin")


def test_peer_note_says_how_peers_were_timed(raw, tmp_path):
    note = report.peer_note(raw)
    assert "same alternating rounds" in note and "OpenVINO 1.0e-06" in note
    old = _with_peers(raw, interleaved=False, openvino=False)  # peers timed after our models (older runs)
    assert "timed after our networks" in report.peer_note(old)
    for net in old["networks"]:
        del net["peers"]
    assert "not measured" in report.peer_note(old)
    header, rows = report.peer_table(old)  # no peer at all: no peer columns, "n/a" ratios
    assert "best dense peer" in header and not any(h.endswith(", s") and h != "ours dense, s" for h in header)
    assert all(dict(zip(header, r))["best dense peer"] == "n/a" for r in rows)
    text = report.write_all(raw, tmp_path)
    assert "| OpenVINO, s |" in text and (tmp_path / "peers.csv").is_file()


def test_a_peer_that_never_ran_gets_no_column_but_a_reason(raw):
    for net in raw["networks"]:
        net["peers"]["torch_cl"] = {"note": "not installed (pip install torch)", "time": None}
    header, rows = report.peer_table(raw)
    assert "torch channels-last, s" not in header and "torch NCHW, s" in header
    assert all(len(r) == len(header) for r in rows)
    assert "Not timed: torch channels-last (not installed (pip install torch))." in report.peer_note(raw)


def _layer_row(network, layer, dense, peer_times):
    row = {"network": network, "layer": layer, "batch": 2, "shape": "s", "dense": _t(dense), "dense_gflops": 1.0,
           "peers": {k: {"note": f"{k} note", "time": _t(v) if v else None} for k, v in peer_times.items()}}
    for name in conv_layers.RATE_NAMES:
        row.update({f"r{name}": _t(dense / 2), f"r{name}_speedup": 2.0, f"r{name}_ideal": 2.0})
    return row


def test_conv_layer_tables_name_the_best_peer_per_layer_and_network(tmp_path):
    meta = {"command": "c", "date": "d", "cpu": "cpu", "logical_cpus": 2, "platform": "p",
            "perforated_build": "b", "environment": {}, "peers": {}, "threads": 2, "repeat": 1,
            "gpu": {"measured": False, "reason": "no GPU on this machine", "device": None}}
    rows = [_layer_row("vgg16", "conv1_1", 0.010, {"onnxruntime": 0.008, "openvino": 0.004, "torch_nchw": None}),
            _layer_row("vgg16", "conv1_2", 0.020, {"onnxruntime": 0.010, "openvino": 0.030, "torch_nchw": None})]
    assert conv_layers.peer_columns(rows) == ["onnxruntime", "openvino"]  # torch never ran: no column
    text = conv_layers.write_tables(rows, meta, tmp_path)
    header = ["network", "layer", "batch", "shape", "dense ms", "dense GFLOP/s"]
    for name in conv_layers.RATE_NAMES:
        header += [f"r={name} ms", f"r={name} speedup (ideal)"]
    header += ["ONNX Runtime ms", "OpenVINO ms", "best peer", "dense vs best peer",
               "r=1/2 vs best peer", "r=2/3 vs best peer", "r=3/4 vs best peer"]
    assert "| " + " | ".join(header) + " |" in text
    # per layer: OpenVINO wins conv1_1 (4 ms vs our 10 ms dense, 5 ms at each rate), ONNX Runtime conv1_2
    assert "| 8.0 | 4.0 | OpenVINO | 0.40x | 0.80x | 0.80x | 0.80x |" in text
    assert "| 10.0 | 30.0 | ONNX Runtime | 0.50x | 1.00x | 1.00x | 1.00x |" in text
    # per network: sums 0.018 (ONNX Runtime) vs 0.034 (OpenVINO); ours 0.030 dense, 0.015 perforated;
    assert ("| vgg16 | 2 | 0.030 | 0.018 | 0.034 | ONNX Runtime | 0.60x | 0.015 (2.00x) | 0.015 (2.00x) | "
            "0.015 (2.00x) | 1.20x | 1.20x | 1.20x | 6/6 |") in text
    assert "OpenVINO: openvino note" in text and "Not timed: torch NCHW (torch_nchw note)." in text
    csv_header = (tmp_path / "conv_layers.csv").read_text().splitlines()[0].split(",")
    assert csv_header == header


# --- the peers compute what we compute ------------------------------------------------------------

@needs_ov
@pytest.mark.parametrize("stride, pad, groups", [(1, 1, 1), (2, 0, 2)])
def test_openvino_conv_matches_onnxruntime(stride, pad, groups):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 8, 11, 11), dtype=np.float32)
    w = rng.standard_normal((6, 8 // groups, 3, 3), dtype=np.float32)
    got = peers.conv_peers(x, w, stride, pad, groups, 1)
    (ort, _), (ov, note) = got["onnxruntime"], got["openvino"]
    assert "f32" in note and "1 threads" in note
    a, b = np.array(ort()), np.array(ov())
    assert a.shape == b.shape == (2, 6, (11 + 2 * pad - 3) // stride + 1, (11 + 2 * pad - 3) // stride + 1)
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())


@needs_ort
def test_network_peers_match_our_dense_model():
    """bench.tables gives the peers our dense model's weights and input: their logits are ours."""
    from bench import tables
    from perforated.graph.model import Model

    model = Model("nin", 1)
    model.x[...] = np.random.default_rng(0).standard_normal(model.x.shape, dtype=np.float32)
    runners = tables.network_peers(model, 1)
    summaries, results = tables.times_with_peers([model], runners, 1)
    assert len(summaries) == 1
    for name in ("onnxruntime",) + (("openvino",) if HAVE["openvino"] else ()):
        assert results[name]["time"]["runs"] == 1
        assert results[name]["max_rel_diff"] < 1e-4, (name, results[name])
