"""Speed regression gates: perforated vs dense ratios of conv layers and of NIN, measured in one run."""
import numpy as np
import pytest

import perforated
from bench.measure import time_call
from perforated.model import Model
from perforated.plan import PerforationPlan

# (name, batch, in_channels, size, out_channels, kernel, stride, pad, groups): real layers, small batches
LAYERS = [
    ("nin_conv2", 64, 96, 16, 192, 5, 1, 2, 1),
    ("alexnet_conv2", 16, 96, 27, 256, 5, 1, 2, 2),
    ("alexnet_conv3", 32, 256, 13, 384, 3, 1, 1, 1),
    ("vgg16_conv3_2", 2, 256, 56, 256, 3, 1, 1, 1),
]
RATES = (0.5, 0.75)


def interleaved_ratio(dense, perforated_run, rounds: int = 5) -> float:
    """Median of dense/perforated over alternating runs, so drift of the machine cancels out."""
    ratios = []
    for _ in range(rounds):
        d = time_call(dense, warmup=0, repeat=1)["median"]
        p = time_call(perforated_run, warmup=0, repeat=1)["median"]
        ratios.append(d / p)
    return float(np.median(ratios))


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
    speedup = interleaved_ratio(dense, perf)
    benchmark.extra_info.update(speedup=speedup, ideal=1 / (1 - rate))
    benchmark.pedantic(perf, rounds=3, iterations=1)
    gate(f"{name}@{rate}", speedup)


@pytest.mark.parametrize("rate", RATES)
def test_nin_network_speedup(benchmark, gate, rate):
    dense = Model("nin", 64)
    perf = Model("nin", 64, plan=PerforationPlan.uniform_rate("nin", rate))
    for m in (dense, perf):
        m.x[...] = np.random.default_rng(0).standard_normal(m.x.shape, dtype=np.float32)
        m.forward()
    speedup = interleaved_ratio(dense.forward, perf.forward)
    benchmark.extra_info.update(speedup=speedup)
    benchmark.pedantic(perf.forward, rounds=3, iterations=1)
    gate(f"nin_network@{rate}", speedup)
