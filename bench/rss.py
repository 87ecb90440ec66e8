"""Peak resident memory of one model: built and run once in a fresh process.

The child reads VmHWM from /proc/self/status: the high-water mark of its own address space.
(ru_maxrss would not do: Linux carries the parent's high-water mark across fork and exec, so every
child of a large benchmark process reported the parent's peak.)

    python -m bench.rss --network alexnet --batch 256 [--plan plan.json]   # prints JSON
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional


def measure_in_child(network: str, batch: int, plan: Optional[dict] = None) -> Optional[int]:
    """Peak RSS in bytes of a child process that builds the model and runs one forward pass."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, "-m", "bench.rss", "--network", network, "--batch", str(batch)]
        if plan is not None:
            path = Path(tmp) / "plan.json"
            path.write_text(json.dumps(plan))
            args += ["--plan", str(path)]
        done = subprocess.run(args, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        return None
    return int(json.loads(done.stdout.strip().splitlines()[-1])["max_rss_bytes"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--network", required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--plan", type=Path)
    args = parser.parse_args()
    import numpy as np

    from perforated.graph.model import Model

    model = Model(args.network, args.batch, plan=args.plan)
    model.x[...] = np.random.default_rng(0).standard_normal(model.x.shape, dtype=np.float32)
    model.forward()
    print(json.dumps({"max_rss_bytes": peak_rss_bytes()}))


def peak_rss_bytes() -> int:
    """VmHWM of this process (Linux), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    main()
