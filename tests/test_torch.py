"""perforated.torch: the functional form (C and pure paths), PerforatedConv2d, perforate on torchvision
models, state dicts, ONNX export through torch.onnx, and fine-tuning with DDP (two processes)."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

if "libasan" in os.environ.get("LD_PRELOAD", ""):
    pytest.skip("torch is not run under the AddressSanitizer pass (its own allocator and threads)",
                allow_module_level=True)
torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from cases import make_batches  # noqa: E402
from perforated import Mask, make_mask  # noqa: E402
from perforated.torch import (PerforatedConv2d, perforate, perforated_conv2d, plan_of, strip_masks,  # noqa: E402
                              uniform_plan, unperforate)


def _reference(x, w, b, stride, padding, dilation, groups, mask):
    """Dense F.conv2d, then each position replaced by its nearest computed position (the definition)."""
    y = F.conv2d(x, w, b, stride, padding, dilation, groups)
    n, c, oh, ow = y.shape
    src = torch.as_tensor(mask.indices.astype(np.int64))[torch.as_tensor(mask.nearest.astype(np.int64))]
    return y.reshape(n, c, oh * ow)[:, :, src].reshape(n, c, oh, ow)


GEOMETRIES = [  # (C, Cout, H, W, k, stride, padding, dilation, groups)
    (3, 4, 9, 11, 3, 1, 1, 1, 1),
    (4, 6, 12, 10, 3, 2, 1, 1, 2),
    (4, 4, 8, 8, 3, 1, 1, 1, 4),       # depthwise
    (5, 3, 10, 9, (3, 1), (2, 1), (1, 0), 1, 1),
    (3, 4, 11, 11, 3, 1, 2, 2, 1),     # dilation
    (4, 6, 13, 12, (3, 2), (1, 2), (2, 1), (2, 3), 2),  # rectangular dilation, groups
    (2, 3, 8, 8, 1, 1, 0, 1, 1),       # 1x1
]


def _args(geom, dtype, seed=0):
    c, o, h, w, k, s, p, d, g = geom
    gen = torch.Generator().manual_seed(seed)
    kh, kw = (k, k) if isinstance(k, int) else k
    x = torch.randn(2, c, h, w, generator=gen, dtype=dtype)
    wt = torch.randn(o, c // g, kh, kw, generator=gen, dtype=dtype)
    b = torch.randn(o, generator=gen, dtype=dtype)
    from perforated.torch import conv_output_size
    mask = make_mask("uniform", conv_output_size((h, w), (kh, kw), s, p, d), 0.5, seed)
    return x, wt, b, dict(stride=s, padding=p, dilation=d, groups=g, mask=mask)


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_pure_path_gradcheck_float64(geom):
    x, w, b, kw = _args(geom, torch.float64)
    x.requires_grad_(), w.requires_grad_(), b.requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w, b: perforated_conv2d(x, w, b, **kw, implementation="torch"),
                                    (x, w, b))
    ref = _reference(x, w, b, kw["stride"], kw["padding"], kw["dilation"], kw["groups"], kw["mask"])
    torch.testing.assert_close(perforated_conv2d(x, w, b, **kw), ref)


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_c_path_matches_pure_path_float32(geom):
    x, w, b, kw = _args(geom, torch.float32, seed=1)
    outs = {}
    for impl in ("c", "torch"):
        xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
        y = perforated_conv2d(xs, ws, bs, **kw, implementation=impl)
        y.backward(torch.linspace(-1, 1, y.numel()).reshape(y.shape))
        outs[impl] = (y.detach(), xs.grad, ws.grad, bs.grad)
    assert type(perforated_conv2d(x, w.requires_grad_(), b, **kw).grad_fn).__name__ == "_PerforatedConvCBackward"
    for a, r in zip(outs["c"], outs["torch"]):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)


def test_c_path_takes_non_contiguous_and_channels_last_inputs():
    x, w, b, kw = _args(GEOMETRIES[0], torch.float32, seed=2)
    ref = perforated_conv2d(x, w, b, **kw, implementation="torch")
    for xin in (x.to(memory_format=torch.channels_last), torch.stack([x, x], -1)[..., 0]):
        assert not xin.is_contiguous() and torch.equal(xin, x)
        torch.testing.assert_close(perforated_conv2d(xin, w, b, **kw, implementation="c"), ref, rtol=1e-4, atol=1e-4)


def test_full_mask_and_no_mask_equal_dense_conv():
    x, w, b, kw = _args(GEOMETRIES[1], torch.float32)
    dense = F.conv2d(x, w, b, kw["stride"], kw["padding"], 1, kw["groups"])
    full = Mask.from_indices(tuple(dense.shape[2:]), np.arange(dense.shape[2] * dense.shape[3]))
    for impl in ("c", "torch"):
        got = perforated_conv2d(x, w, b, kw["stride"], kw["padding"], 1, kw["groups"], full, implementation=impl)
        torch.testing.assert_close(got, dense, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(perforated_conv2d(x, w, b, kw["stride"], kw["padding"], 1, kw["groups"]), dense)


def test_same_padding_with_even_kernel():
    gen = torch.Generator().manual_seed(4)
    x, w = torch.randn(1, 2, 7, 6, generator=gen), torch.randn(3, 2, 2, 4, generator=gen)
    mask = make_mask("grid", (7, 6), 0.5, 0)
    ref = _reference(x, w, None, 1, "same", 1, 1, mask)
    for impl in ("c", "torch"):
        torch.testing.assert_close(perforated_conv2d(x, w, None, 1, "same", mask=mask, implementation=impl), ref,
                                   rtol=1e-4, atol=1e-4)


def test_bad_input_errors_name_the_argument():
    x, w, b, kw = _args(GEOMETRIES[0], torch.float32)
    wrong = make_mask("uniform", (3, 3), 0.5, 0)
    with pytest.raises(ValueError, match="mask must have the output size"):
        perforated_conv2d(x, w, b, 1, 1, mask=wrong)
    with pytest.raises(ValueError, match="implementation='c' cannot run: x is torch.float64"):
        perforated_conv2d(x.double(), w.double(), b.double(), 1, 1, mask=kw["mask"], implementation="c")
    with pytest.raises(ValueError, match="implementation must be one of"):
        perforated_conv2d(x, w, b, 1, 1, mask=kw["mask"], implementation="fast")
    with pytest.raises(TypeError, match="mask must be a perforated.Mask"):
        perforated_conv2d(x, w, b, 1, 1, mask=np.ones((9, 11)))
    with pytest.raises(ValueError, match="weight must have C/groups"):
        perforated_conv2d(x, w[:, :2], b, 1, 1, mask=kw["mask"])
    with pytest.raises(ValueError, match="bias must have shape"):
        perforated_conv2d(x, w, b[:2], 1, 1, mask=kw["mask"])
    # float16 / float64 go to the pure path under "auto" (no error, the same mathematics)
    y64 = perforated_conv2d(x.double(), w.double(), b.double(), 1, 1, mask=kw["mask"])
    torch.testing.assert_close(y64.float(), perforated_conv2d(x, w, b, 1, 1, mask=kw["mask"]), rtol=1e-4, atol=1e-4)


def test_module_from_conv_shares_weights_and_state_dicts_round_trip():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=1, padding_mode="reflect")
    p = PerforatedConv2d.from_conv(conv, rate=0.5, kind="grid", seed=7)
    assert p.weight is conv.weight and p.bias is conv.bias
    x = torch.randn(2, 3, 10, 12)
    y = p(x)
    xp = F.pad(x, (1, 1, 1, 1), mode="reflect")
    torch.testing.assert_close(y, _reference(xp, conv.weight, conv.bias, 1, 0, 1, 1, p.mask_for((10, 12))),
                               rtol=1e-4, atol=1e-4)
    sd = p.state_dict()
    assert sd["_extra_state"]["kind"] == "grid"
    q = PerforatedConv2d(3, 5, 3, padding=1, padding_mode="reflect")  # dense spec until loaded
    q.load_state_dict(sd)
    assert q.spec["kind"] == "grid" and q.rate == 0.5
    torch.testing.assert_close(q(x), y)
    plain = nn.Conv2d(3, 5, 3, padding=1, padding_mode="reflect")
    plain.load_state_dict(strip_masks(sd))               # perforated -> plain
    with pytest.raises(RuntimeError, match="_extra_state"):
        plain.load_state_dict(sd)                        # strict: the spec is not a Conv2d key
    r = PerforatedConv2d(3, 5, 3, padding=1, padding_mode="reflect", rate=0.25, seed=1)
    r.load_state_dict(conv.state_dict())                 # plain -> perforated keeps its own spec
    assert r.rate == 0.25
    torch.testing.assert_close(r.weight, conv.weight)


def test_module_explicit_mask_and_errors():
    mask = make_mask("uniform", (6, 6), 0.5, 3)
    m = PerforatedConv2d(2, 3, 3, padding=1, mask=mask)
    m(torch.randn(1, 2, 6, 6))
    with pytest.raises(ValueError, match=r"mask has size \(6, 6\) but the output here is \(8, 8\)"):
        m(torch.randn(1, 2, 8, 8))
    with pytest.raises(ValueError, match="rate must be a number in"):
        PerforatedConv2d(2, 3, 3, rate=1.5)
    with pytest.raises(ValueError, match="kind 'pooling'"):
        PerforatedConv2d(2, 3, 3, rate=0.5, kind="pooling")
    with pytest.raises(ValueError, match="needs scores"):
        PerforatedConv2d(2, 3, 3, rate=0.5, kind="impact")
    scores = np.arange(36, dtype=np.float32).reshape(6, 6)
    imp = PerforatedConv2d(2, 3, 3, padding=1, rate=0.75, kind="impact", scores=scores)
    imp(torch.randn(1, 2, 6, 6))
    assert set(imp.mask_for((6, 6)).indices) == set(range(27, 36))  # the 9 highest scores


@pytest.fixture(scope="module")
def torchvision():
    return pytest.importorskip("torchvision")


@pytest.mark.parametrize("name", ["resnet18", "vgg16", "mobilenet_v2"])
def test_perforate_torchvision_models(torchvision, name):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        dense = model(x)
    plan = uniform_plan(model, 0.5, "grid", example_input=x)
    assert plan["layers"] and json.loads(json.dumps(plan)) == plan
    perforate(model, plan, example_input=x)
    convs = [m for m in model.modules() if isinstance(m, PerforatedConv2d)]
    assert len(convs) == len(plan["layers"])
    with torch.no_grad():
        c_out = model(x)
        for m in convs:
            m.implementation = "torch"
        torch_out = model(x)
    scale = float(dense.abs().max())
    torch.testing.assert_close(c_out, torch_out, rtol=1e-3, atol=1e-4 * scale)
    assert float((c_out - dense).abs().max()) > 1e-6 * scale   # perforation changed the answer
    fresh = torchvision.models.get_model(name, weights=None, num_classes=10).eval()
    fresh.load_state_dict(strip_masks(model.state_dict()))
    perforate(fresh, json.loads(json.dumps(plan_of(model))))   # the plan of the model, through JSON
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), torch_out, rtol=1e-3, atol=1e-4 * scale)
    unperforate(model)
    assert not any(isinstance(m, PerforatedConv2d) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(x), dense)


def test_perforate_errors():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    with pytest.raises(ValueError, match="names module '5', which this model does not have"):
        perforate(model, {"layers": {"5": {"rate": 0.5}}})
    with pytest.raises(ValueError, match="'1', a ReLU, not an nn.Conv2d"):
        perforate(model, {"layers": {"1": {"rate": 0.5}}})
    with pytest.raises(TypeError, match="scripted"):
        perforate(torch.jit.script(model), {"rate": 0.5})
    with pytest.raises(ValueError, match="lists positions but not the map size"):
        perforate(model, {"layers": {"0": {"kind": "indices", "indices": [0, 3]}}})
    with pytest.raises(ValueError, match="mask has size"):
        perforate(model, {"layers": {"0": {"kind": "indices", "indices": [0, 3], "size": [3, 3]}}},
                  example_input=torch.randn(1, 3, 8, 8))
    perforate(model, {"layers": {"2": {"kind": "indices", "indices": [0, 5], "size": [4, 4]}}},
              example_input=torch.randn(1, 3, 8, 8))
    assert isinstance(model[2], PerforatedConv2d) and model[2].mask_for((4, 4)).count == 2


def test_torch_onnx_export_runs_in_onnx_runtime():
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2, padding=1,
                                                                                groups=2)).eval()
    x = torch.randn(2, 3, 16, 16)
    perforate(model, {"rate": 0.5, "kind": "grid"}, example_input=x)
    program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
    ops = {n.op_type for n in program.model_proto.graph.node}
    assert "Conv" not in ops and {"Gather", "MatMul"} <= ops
    sess = ort.InferenceSession(program.model_proto.SerializeToString())
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-5)


TINY = textwrap.dedent("""
    from torch import nn
    def tiny(num_classes=10):
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                             nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
""")


def _finetune(tmp_path, *extra, nproc=1, plan=("--rate", "0.5", "--kind", "grid")):
    runner = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
              if nproc > 1 else [sys.executable])
    cmd = runner + ["-m", "perforated.torch.finetune", "--model", f"{tmp_path / 'tiny.py'}:tiny", *plan,
                    "--limit", "64", "--eval-limit", "32", "--lr", "0.1", "--schedule", "const",
                    "--seed", "3", *extra]
    data = tmp_path / "cifar-10-batches-py"
    if not data.exists():  # a synthetic CIFAR-10 release: the tests need no dataset on disk
        make_batches(data, np.random.default_rng(0), n_train=64, n_test=32)
    cmd += ["--data", str(data)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_finetune_ddp_two_processes_equal_one_process_on_the_concatenated_batch(tmp_path):
    (tmp_path / "tiny.py").write_text(TINY)
    _finetune(tmp_path, "--batch", "8", "--steps", "3", "--no-eval", "--out", str(tmp_path / "two_{rank}.pt"),
              nproc=2)
    events = _finetune(tmp_path, "--batch", "16", "--steps", "3", "--out", str(tmp_path / "one.pt"))
    assert [e["event"] for e in events][0] == "start" and events[0]["perforated"] == 2
    assert any(e["event"] == "eval" and e["images"] == 32 for e in events)
    r0, r1, one = (torch.load(tmp_path / f, weights_only=False) for f in ("two_0.pt", "two_1.pt", "one.pt"))
    start = torch.load(tmp_path / "one.pt", weights_only=False)
    for key, value in one.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(r0[key], r1[key]), key                         # ranks hold identical weights
            torch.testing.assert_close(r0[key], value, rtol=1e-5, atol=1e-6)  # = one process, batch 2 x 8
        else:
            assert r0[key] == value == start[key]                             # the perforation spec rides along


def test_finetune_resumes_from_its_checkpoint(tmp_path):
    (tmp_path / "tiny.py").write_text(TINY)
    ckpt = tmp_path / "run.ckpt"
    straight = tmp_path / "straight.pt"
    _finetune(tmp_path, "--batch", "8", "--steps", "6", "--no-eval", "--no-augment", "--out", str(straight))
    _finetune(tmp_path, "--batch", "8", "--steps", "3", "--no-eval", "--no-augment", "--checkpoint", str(ckpt))
    events = _finetune(tmp_path, "--batch", "8", "--steps", "6", "--no-eval", "--no-augment", "--checkpoint",
                       str(ckpt), "--out", str(tmp_path / "resumed.pt"))
    assert events[0] == {"event": "resumed", "checkpoint": str(ckpt), "step": 3}
    a, b = torch.load(straight, weights_only=False), torch.load(tmp_path / "resumed.pt", weights_only=False)
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(b[key], value, rtol=1e-5, atol=1e-6)
    # a perforated model's weights, given without a plan, bring their masks along
    events = _finetune(tmp_path, "--batch", "8", "--steps", "1", "--no-eval", "--weights", str(straight), "--out",
                       str(tmp_path / "again.pt"), plan=())
    assert events[0]["perforated"] == 2
    again = torch.load(tmp_path / "again.pt", weights_only=False)
    assert again["0._extra_state"] == a["0._extra_state"] and again["2._extra_state"]["kind"] == "grid"


class _SumLogit(nn.Module):
    """logits = [sum of the conv output, 0]: dL/dV is the same at every position, known in closed form."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)

    def forward(self, x):
        s = self.conv(x).sum((1, 2, 3))
        return torch.stack([s, torch.zeros_like(s)], 1)


def test_impact_maps_follow_the_definition():
    from perforated.torch import impact_maps

    torch.manual_seed(0)
    model = _SumLogit()
    x, y = torch.randn(3, 1, 6, 6), torch.tensor([0, 1, 0])
    with torch.no_grad():
        v = model.conv(x)[:, 0]                                          # (N, h, w)
        p0 = torch.softmax(model(x), 1)[:, 0]
    dl_ds = torch.where(y == 0, p0 - 1, p0)                              # d(-log softmax_y)/d s
    want = (dl_ds[:, None, None] * v).abs().mean(0).double().numpy()
    got = impact_maps(model, [(x[:2], y[:2]), (x[2:], y[2:])])["conv"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # perforated: a computed value's gradient includes the positions copying it; the others score 0
    mask = make_mask("uniform", (6, 6), 0.5, 2)
    perforate(model, {"layers": {"conv": {"kind": "indices", "indices": mask.indices.tolist(), "size": [6, 6]}}})
    mask = model.conv.mask_for((6, 6))  # the same positions; its nearest map breaks ties by its own seed
    with torch.no_grad():
        p0 = torch.softmax(model(x), 1)[:, 0]
    dl_ds = torch.where(y == 0, p0 - 1, p0)
    copies = np.bincount(mask.nearest, minlength=mask.count)
    want = np.zeros(36)
    want[mask.indices] = (dl_ds[:, None] * v.reshape(3, 36)[:, mask.indices] * torch.from_numpy(copies)).abs().mean(0)
    np.testing.assert_allclose(impact_maps(model, [(x, y)])["conv"].ravel(), want, rtol=1e-5, atol=1e-7)


def test_greedy_search_nested_masks_target_and_saved_plans(tmp_path):
    from perforated.torch import greedy_search

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    fresh = nn.Sequential(*[m for m in __import__("copy").deepcopy(model)])
    held = [(torch.randn(8, 3, 12, 12), torch.randint(0, 10, (8,))) for _ in range(2)]

    def positions(m):  # a deterministic stand-in for the measured time: computed positions x MACs per position
        total = 0.0
        for name, size, macs in (("0", (12, 12), 3 * 9 * 8), ("2", (6, 6), 8 * 9 * 8)):
            mk = m.get_submodule(name).mask_for(size)
            total += (mk.count if mk is not None else size[0] * size[1]) * macs
        return total

    result = greedy_search(model, held, held[0][0], target_speedup=1.8, steps=30, kind="impact",
                           time_fn=positions, out=tmp_path)
    history = result["history"]
    assert history[-1]["speedup"] >= 1.8 and all(h["speedup"] < 1.8 for h in history[1:-1])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"step_{i:03d}.json" for i in range(1, len(history))]
    kept = {}
    for step in range(1, len(history)):  # masks only ever lose positions (impact recomputed on the current net)
        saved = json.loads((tmp_path / f"step_{step:03d}.json").read_text())
        assert saved["layer"] == history[step]["layer"]
        for name, spec in saved["layers"].items():
            if name == saved["layer"]:  # the layer of this step: strictly fewer positions, all kept before
                assert name not in kept or set(spec["indices"]) < kept[name]
            else:
                assert set(spec["indices"]) == kept[name]
            kept[name] = set(spec["indices"])
    perforate(fresh, result["plan"])
    with torch.no_grad():
        torch.testing.assert_close(fresh(held[0][0]), model(held[0][0]))


@pytest.mark.parametrize("name", ["bvlc_alexnet", "squeezenet", "inception_v1"])
def test_onnx_graph_as_torch_module_matches_our_engine_dense_and_perforated(name):
    pytest.importorskip("onnx")
    import perforated.onnx as pon
    from perforated.onnx.zoo import zoo_model
    from perforated.torch.graph import from_onnx, node_plan

    proto = zoo_model(name, softmax=False)
    module = from_onnx(proto).eval()
    assert any(isinstance(m, nn.BatchNorm2d) or isinstance(m, nn.Conv2d) for m in module.modules())
    dense = pon.load(proto, batch=2)
    x = np.random.default_rng(0).standard_normal(next(iter(dense.graph.inputs.values()))).astype(np.float32)
    want = dense.forward(x)
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * scale)
    # the same plan by node name in both engines: identical masks, the same answer
    plan = {"layers": {n: {"kind": "grid", "rate": 0.5, "seed": i} for i, n in enumerate(dense.perforable[:4])}}
    ours = pon.load(proto, batch=2, plan=plan)
    perforate(module, node_plan(module, plan), example_input=torch.from_numpy(x[:1]))
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    want_p = ours.forward(x)
    assert np.abs(want_p - want).max() > 1e-4 * scale
    np.testing.assert_allclose(got, want_p, rtol=1e-3, atol=1e-4 * scale)


def test_search_command_writes_plans(tmp_path):
    (tmp_path / "tiny.py").write_text(TINY)
    data = tmp_path / "cifar-10-batches-py"
    make_batches(data, np.random.default_rng(1), n_train=64, n_test=8)
    out = tmp_path / "search"
    namespace = {}
    exec(TINY, namespace)
    start = perforate(namespace["tiny"](), {"rate": 0.5, "kind": "grid"})  # perforated weights: masks dropped
    torch.save(start.state_dict(), tmp_path / "start.pt")
    done = subprocess.run([sys.executable, "-m", "perforated.torch.search", "--model", f"{tmp_path / 'tiny.py'}:tiny",
                           "--weights", str(tmp_path / "start.pt"), "--data", str(data), "--held-out", "32", "--impact-images", "32", "--batch", "16",
                           "--timing-batch", "8", "--target", "100", "--steps", "3", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [e.get("step") for e in lines[:4]] == [0, 1, 2, 3] and lines[-1]["steps"] == 3
    plan = json.loads((out / "plan.json").read_text())
    assert plan == {"layers": json.loads((out / "step_003.json").read_text())["layers"]}
    model = perforate(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1)),
                      plan)
    assert sum(isinstance(m, PerforatedConv2d) for m in model.modules()) == len(plan["layers"]) > 0
