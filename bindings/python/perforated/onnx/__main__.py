"""python -m perforated.onnx {info,run,time,perforate,export} model.onnx [--batch B] [--plan plan.json | --rate R --kind K]
    [--lowrank RATIO]

  info       the convolutions: shapes, multiply-adds per image, and what a plan leaves of them
  run        one forward pass on a seeded random input (or --input x.npy); prints the output's shape and
             top values, compares with ONNX Runtime when it is installed, writes --out y.npy
  time       ours dense, ours with the plan, ONNX Runtime dense and (with a plan) ONNX Runtime running
             the exported perforated graph, timed in alternating rounds
  perforate  write the plan (every perforable conv at --rate, or --plan's layers) as JSON with the
             masks' positions (kind "indices"), to load again with --plan
  export     write the model (perforated by the plan) in standard ONNX ops to --out (default
             model.perforated.onnx), to run in stock ONNX Runtime or OpenVINO

--lowrank RATIO first decomposes the convs (both kernel sides above 1) into vertical and horizontal
parts with ranks chosen for RATIO times fewer conv multiply-adds (data-free, from the weights; the plan
then perforates the horizontal parts): every command works on the decomposed network.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

import numpy as np

from ..timing import alternating_times
from . import export, load, to_onnx


def _plan(args) -> Optional[dict]:
    if args.plan:
        return args.plan
    if args.rate is not None:
        return {"rate": args.rate, "kind": args.kind, "seed": args.seed}
    return None


def _input(model, args) -> np.ndarray:
    shape = next(iter(model.graph.inputs.values()))
    if args.input:
        x = np.load(args.input)
        if x.shape != tuple(shape):
            raise SystemExit(f"--input: the model takes shape {tuple(shape)}, {args.input} holds {x.shape}")
        return x.astype(np.float32)
    return np.random.default_rng(args.seed).standard_normal(shape).astype(np.float32)


def _ort(path, threads: int):
    """An ONNX Runtime session of a file path or serialised model bytes, or None without ORT."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def cmd_info(model, args) -> None:
    rows = model.convs()
    print(f"{model.graph.name}: {len(model.graph.nodes)} nodes, {len(rows)} convolutions, batch {model.batch}, "
          f"inputs {dict(model.graph.inputs)}, outputs {model.graph.outputs}")
    print(f"{'conv node':40s} {'in':>5s} {'out':>5s} {'kernel':>7s} {'stride':>7s} {'group':>5s} "
          f"{'out map':>9s} {'MMACs':>9s} {'rate':>6s}")
    for r in rows:
        print(f"{r['name'][:40]:40s} {r['in_channels']:5d} {r['out_channels']:5d} "
              f"{'%dx%d' % r['kernel']:>7s} {'%dx%d' % r['stride']:>7s} {r['group']:5d} "
              f"{'%dx%d' % r['out_size']:>9s} {r['macs'] / 1e6:9.2f} {r['rate']:6.2f}")
    m = model.macs()
    print(f"conv multiply-adds per image: {m['dense'] / 1e9:.3f} G dense, {m['planned'] / 1e9:.3f} G planned "
          f"({m['dense'] / max(m['planned'], 1):.2f}x fewer)")
    if args.lowrank is not None:
        print("low-rank: the table lists the decomposed convs (<node>/v the vertical part, <node> the horizontal)"
              + _reduction(model, args) + " than the file's graph")


def cmd_run(model, args) -> None:
    x = _input(model, args)
    y = model.forward(x)
    print(f"output {model.graph.outputs[0]!r}: shape {y.shape}, mean {float(y.mean()):.6g}, "
          f"max {float(y.max()):.6g}")
    if y.ndim == 2:
        print("top-5 of image 0:", np.argsort(y[0])[::-1][:5].tolist())
    changed = bool(model.masks) or args.lowrank is not None
    if args.batch is None and args.weights is None:
        source = args.model
    else:  # another batch or other weights: ONNX Runtime runs our export of the dense graph
        dense = load(args.model, batch=args.batch, weights=args.weights) if changed else model
        source = to_onnx(dense).SerializeToString()
    session = _ort(source, args.threads)
    if session is not None:
        ref = session.run(None, {session.get_inputs()[0].name: x})[0]
        err = float(np.abs(y - ref).max() / max(float(np.abs(ref).max()), 1e-30))
        if changed:
            print(f"the plan / low-rank changes the output: max |ours - ONNX Runtime dense| / max |ort| = {err:.3g}")
        else:
            print(f"ONNX Runtime (dense): max |ours - ort| / max |ort| = {err:.3g}")
    if args.out:
        np.save(args.out, y)
        print(f"wrote {args.out}")


def cmd_time(model, args) -> None:
    x = _input(model, args)
    changed = bool(model.masks) or args.lowrank is not None
    dense = load(args.model, batch=args.batch, weights=args.weights) if changed else None
    what = " + ".join((["low-rank"] if args.lowrank is not None else []) + (["plan"] if model.masks else []))
    calls, names = [lambda: model.forward(x)], [f"ours ({what or 'dense'})"]
    if dense is not None:
        calls.append(lambda: dense.forward(x))
        names.append("ours (dense)")
    # ONNX Runtime reads the file itself, or (at another batch, with other weights) our export of the dense graph
    source = (args.model if args.batch is None and args.weights is None
              else to_onnx(dense or model).SerializeToString())
    session = _ort(source, args.threads)
    if session is not None:
        feed = {session.get_inputs()[0].name: x}
        calls.append(lambda: session.run(None, feed))
        names.append("onnxruntime (dense)")
        if changed:
            exported = _ort(to_onnx(model).SerializeToString(), args.threads)
            calls.append(lambda: exported.run(None, feed))
            names.append(f"onnxruntime (exported {what})")
    times = alternating_times(calls, args.rounds)
    best = {n: min(t) for n, t in zip(names, times)}
    base = best.get("onnxruntime (dense)", best.get("ours (dense)"))
    for n in names:
        line = f"{n:22s} min {best[n] * 1e3:9.2f} ms  median {float(np.median(times[names.index(n)])) * 1e3:9.2f} ms"
        if base is not None:
            line += f"  speed {base / best[n]:.2f}x"
        print(line)
    if session is None:
        print("(ONNX Runtime is not installed: pip install onnxruntime)")


def cmd_perforate(model, args) -> None:
    if not model.masks:
        raise SystemExit("perforate: give --rate or --plan")
    layers = {name: {"kind": "indices", "rate": float(m.rate), "seed": int(m.seed), "indices": m.indices.tolist(),
                     "made_as": m.kind} for name, m in model.masks.items()}
    out = args.out or "plan.json"
    with open(out, "w") as f:
        json.dump({"network": model.graph.name, "layers": layers}, f)
    print(f"wrote {out}: {len(layers)} convs perforated" + _reduction(model, args))


def cmd_export(model, args) -> None:
    out = args.out or args.model.rsplit(".onnx", 1)[0] + ".perforated.onnx"
    export(model, out)
    print(f"wrote {out}: {len(model.masks)} perforated convs in standard ONNX ops" + _reduction(model, args))


def _reduction(model, args) -> str:
    """How many times fewer conv multiply-adds the model computes than the file's dense graph."""
    original = (load(args.model, batch=args.batch, weights=args.weights).macs()["dense"] if args.lowrank is not None
                else model.macs()["dense"])
    return f", {original / max(model.macs()['planned'], 1):.2f}x fewer conv multiply-adds"


COMMANDS = {"info": cmd_info, "run": cmd_run, "time": cmd_time, "perforate": cmd_perforate, "export": cmd_export}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m perforated.onnx", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("command", choices=sorted(COMMANDS))
    p.add_argument("model", help="an .onnx file")
    p.add_argument("--batch", type=int, default=None, help="images per call (default: the graph's)")
    p.add_argument("--plan", default=None, help="a plan JSON ({'layers': {conv node: spec}})")
    p.add_argument("--rate", type=float, default=None, help="the same perforation rate on every perforable conv")
    p.add_argument("--kind", default="grid", choices=["uniform", "grid"], help="mask kind with --rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--input", default=None, help="an .npy input (default: seeded normal noise)")
    p.add_argument("--out", default=None, help="run: output .npy; perforate: plan JSON (default plan.json); export: .onnx")
    p.add_argument("--rounds", type=int, default=5, help="time: alternating rounds")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime's intra-op threads")
    p.add_argument("--weights", default=None,
                   help="an .npz or a PyTorch state_dict (.pt) replacing the initializers of the same names")
    p.add_argument("--lowrank", type=float, default=None,
                   help="decompose the convs first, for this many times fewer conv multiply-adds (>= 1)")
    args = p.parse_args(argv)
    try:
        model = load(args.model, batch=args.batch, plan=_plan(args), lowrank=args.lowrank, weights=args.weights)
    except ValueError as e:  # GraphError too: bad file, unsupported node, plan, weights or ratio
        print(f"python -m perforated.onnx {args.command}: {e}", file=sys.stderr)
        return 2
    COMMANDS[args.command](model, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
