"""Per-layer forward (training) and backward times of one SGD step of our Model, median of 5 steps.

    python bench/micro/train_profile.py [network] [batch]      # default: nin 128
"""
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.train_speed import ours_step  # noqa: E402

network = sys.argv[1] if len(sys.argv) > 1 else "nin"
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 128
step = ours_step(network, batch)
model = step.model
fw, bw = defaultdict(list), defaultdict(list)
for s in model.steps:
    def wrap(s=s):
        f0, b0 = s.forward, s.backward
        def f(training):
            t = time.perf_counter(); f0(training); fw[s.name].append(time.perf_counter() - t)
        def b(dy, dx):
            t = time.perf_counter(); b0(dy, dx); bw[s.name].append(time.perf_counter() - t)
        s.forward, s.backward = f, b
    wrap()
step()
for d in (fw, bw): d.clear()
tot = []
for _ in range(5):
    t = time.perf_counter(); step(); tot.append(time.perf_counter() - t)
print(f"{network} b{batch} step median {np.median(tot)*1e3:.0f} ms  ({batch/np.median(tot):.1f} img/s)")
acc = 0
for s in model.steps:
    f, b = np.median(fw[s.name]) * 1e3, np.median(bw[s.name]) * 1e3 if bw[s.name] else 0
    acc += f + b
    macs = getattr(s, "macs", 0) * batch
    g = f"  fwd {2*macs/f/1e6:6.1f} GF/s" if macs else ""
    gb = f"  bwd {4*macs/b/1e6:6.1f} GF/s" if macs and b else ""
    print(f"{s.name:10s} {s.kind:8s} fwd {f:7.1f} ms  bwd {b:7.1f} ms{g}{gb}")
print(f"sum of steps {acc:.0f} ms")
