"""Timing and metadata shared by every benchmark of the harness.

`time_call` runs warm-ups then repeats and reports the median and the spread (min, max, relative
inter-quartile range), so tables show the noise of this shared machine beside each figure.
`machine_metadata` records what a reader needs to reproduce a figure: CPU, cores, BLAS and its
configuration, threads, library build, versions, and the command line.
"""
from __future__ import annotations

import os
import platform
import shlex
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence


def time_call(fn: Callable[[], object], *, warmup: int = 1, repeat: int = 5,
              min_time: float = 0.0) -> Dict[str, float]:
    """Median wall time of `fn()` in seconds over `repeat` runs after `warmup` runs.

    `min_time`: keep repeating (beyond `repeat`) until the runs add up to at least this many seconds.
    """
    for _ in range(warmup):
        fn()
    times: List[float] = []
    while len(times) < repeat or sum(times) < min_time:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if len(times) >= 1000:
            break
    return summarize(times)


def alternating(calls: Sequence[Callable[[], object]], rounds: int) -> List[List[float]]:
    """Wall times in seconds of each call in `rounds` alternating rounds, one list per call, without
    warm-up (the caller's job). Round r runs every call once: in the given order when r is even, in
    reverse when r is odd, so no call always follows the same neighbour (another engine's threads
    winding down, its cache footprint). Each round goes through perforated.timing.alternating_times,
    the library's own interleaved timer."""
    from perforated.timing import alternating_times

    if rounds < 1:
        raise ValueError(f"alternating: rounds must be >= 1, got {rounds}")
    times: List[List[float]] = [[] for _ in calls]
    order = list(range(len(calls)))
    for r in range(rounds):
        idx = order if r % 2 == 0 else order[::-1]
        for i, t in zip(idx, alternating_times([calls[i] for i in idx], 1, warmup=False)):
            times[i] += t
    return times


def summarize(times: List[float]) -> Dict[str, float]:
    """Median, min, max and relative inter-quartile range of a list of run times."""
    times = sorted(times)
    q1, q3 = times[len(times) // 4], times[(3 * len(times)) // 4]
    median = statistics.median(times)
    return {"median": median, "min": times[0], "max": times[-1],
            "iqr_rel": (q3 - q1) / median if median > 0 else 0.0, "runs": len(times)}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _commit() -> Optional[str]:
    """The checkout's commit (``+dirty`` when files differ from it), or None outside a git checkout."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def isa() -> str:
    """The widest FMA instruction set of this CPU that the kernels use: 'AVX-512', 'AVX2+FMA' or 'other'."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    return "AVX-512" if "avx512f" in flags else "AVX2+FMA" if "avx2" in flags and "fma" in flags else "other"


def machine_metadata() -> Dict[str, object]:
    import numpy

    import perforated

    env = {k: v for k, v in os.environ.items()
           if k.startswith(("OPENBLAS", "OMP_", "MKL_", "GOMP", "PERFORATED"))}
    env.setdefault("OPENBLAS_CORETYPE", "(unset: OpenBLAS detects the CPU)")
    meta: Dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        # quoted as a shell would need it (an argument such as --kinds "fractional stride")
        "command": shlex.join([os.path.basename(sys.executable), "-m"] + [_module_name()] + sys.argv[1:]),
        "cpu": _cpu_name(),
        "isa": isa(),
        "commit": _commit(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "perforated_build": perforated.build_info(),
        "perforated_threads": perforated.get_num_threads(),
        "environment": env,
    }
    try:
        import scipy_openblas32

        meta["openblas_config"] = scipy_openblas32.get_openblas_config() \
            if hasattr(scipy_openblas32, "get_openblas_config") else scipy_openblas32.__version__
    except ImportError:
        pass
    return meta


def _module_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec.name if spec is not None else os.path.basename(sys.argv[0])


def progress(message: str) -> None:
    """One progress line on stderr (kept apart from table output on stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def interleaved_times(models: Sequence, repeat: int) -> List[Dict[str, float]]:
    """Time the models' forward passes in alternation (round r times every model once), so a slow
    drift of this shared machine affects the dense network and its perforated versions alike. `models`:
    CPU perforated.graph.model.Model objects (their input buffers get the same random images)."""
    import numpy as np

    from perforated.timing import alternating_times

    rng = np.random.default_rng(0)
    for model in models:
        model.x[...] = rng.standard_normal(model.x.shape, dtype=np.float32)
    runs = alternating_times([model.forward for model in models], repeat)
    return [summarize(r) for r in runs]
