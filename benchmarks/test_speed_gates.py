"""Speed regression gates, ratios measured in one run with the calls alternating: perforated vs dense
(conv layers, NIN), and our dense NIN vs ONNX Runtime on the same graph (the engine against the peer)."""
import numpy as np
import pytest

import perforated
from bench.measure import time_call
from perforated.graph.model import Model
from perforated.graph.plan import PerforationPlan

# (name, batch, in_channels, size, out_channels, kernel, stride, pad, groups): real layers, small batches
LAYERS = [
    ("nin_conv2", 64, 96, 16, 192, 5, 1, 2, 1),
    ("alexnet_conv2", 16, 96, 27, 256, 5, 1, 2, 2),
    ("alexnet_conv3", 32, 256, 13, 384, 3, 1, 1, 1),
    ("vgg16_conv3_2", 2, 256, 56, 256, 3, 1, 1, 1),
]
RATES = (0.5, 0.75)


def interleaved_ratio(slow, fast, rounds: int = 5):
    """(median of slow/fast, median slow time, median fast time) over `rounds` rounds; the two calls swap
    order every round, so neither always runs first on a drifting machine."""
    ratios, ts, tf = [], [], []
    for r in range(rounds):
        if r % 2:
            f = time_call(fast, warmup=0, repeat=1)["median"]
            s = time_call(slow, warmup=0, repeat=1)["median"]
        else:
            s = time_call(slow, warmup=0, repeat=1)["median"]
            f = time_call(fast, warmup=0, repeat=1)["median"]
        ratios.append(s / f)
        ts.append(s)
        tf.append(f)
    return float(np.median(ratios)), float(np.median(ts)), float(np.median(tf))


def _record(benchmark, pair, ratio, slow_s, fast_s, **extra):
    """pytest-benchmark times the pair of calls (both sides); the ratio and each side's median go in
    extra_info, so a saved run (--benchmark-autosave / --benchmark-json) holds all three."""
    benchmark.extra_info.update(ratio=ratio, slow_median_s=slow_s, fast_median_s=fast_s, **extra)
    benchmark.pedantic(pair, rounds=3, iterations=1)


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("layer", LAYERS, ids=[l[0] for l in LAYERS])
def test_conv_layer_speedup(benchmark, gate, layer, rate):
    name, batch, cin, size, cout, k, s, p, g = layer
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, cin, size, size), dtype=np.float32)
    w = rng.standard_normal((cout, cin // g, k, k), dtype=np.float32)
    dense_plan = perforated.ConvPlan(batch, cin, (size, size), cout, k, s, p, g)
    mask = perforated.make_mask("uniform", dense_plan.out_size, rate, seed=0)
    perf_plan = perforated.ConvPlan(batch, cin, (size, size), cout, k, s, p, g, mask=mask)
    yd, yp = np.empty(dense_plan.y_shape, np.float32), np.empty(perf_plan.y_shape, np.float32)
    dense = lambda: dense_plan.forward(x, w, out=yd)
    perf = lambda: perf_plan.forward(x, w, out=yp)
    dense(), perf()  # warm-up
    speedup, td, tp = interleaved_ratio(dense, perf)
    _record(benchmark, lambda: (dense(), perf()), speedup, td, tp, ideal=1 / (1 - rate))
    gate(f"{name}@{rate}", speedup)


@pytest.mark.parametrize("rate", RATES)
def test_nin_network_speedup(benchmark, gate, rate):
    dense = Model("nin", 64)
    perf = Model("nin", 64, plan=PerforationPlan.uniform_rate("nin", rate))
    for m in (dense, perf):
        m.x[...] = np.random.default_rng(0).standard_normal(m.x.shape, dtype=np.float32)
        m.forward()
    speedup, td, tp = interleaved_ratio(dense.forward, perf.forward)
    _record(benchmark, lambda: (dense.forward(), perf.forward()), speedup, td, tp)
    gate(f"nin_network@{rate}", speedup)


def test_nin_dense_engine_vs_onnxruntime(benchmark, gate):
    """Our dense NIN (the channels-last engine) against ONNX Runtime on the same graph, same threads."""
    pytest.importorskip("onnxruntime")
    from bench.peer_networks import ort_network_runner
    from perforated.graph.networks import NETWORKS

    info = NETWORKS["nin"]
    model = Model("nin", 64)
    x = np.random.default_rng(0).standard_normal(model.x.shape, dtype=np.float32)
    model.x[...] = x
    peer, note = ort_network_runner(info["layers"](), info["input"], 64, info["classes"],
                                    perforated.get_num_threads(), x=x)
    if peer is None:
        pytest.skip(note)
    model.forward(), peer()
    ratio, tpeer, tours = interleaved_ratio(peer, model.forward)
    _record(benchmark, lambda: (peer(), model.forward()), ratio, tpeer, tours, peer=note)
    gate("nin_dense_vs_onnxruntime", ratio)
