"""A whole network on the CUDA backend: ``Model(..., device="cuda")`` against the CPU model.

Three groups:
- everywhere: the errors of a build or machine that cannot serve ``device="cuda"``, and of a missing
  CuPy, name the device / the ``cuda`` extra;
- everywhere: the device *plumbing* of the model (every step on GPU arrays, on the model's context)
  runs on a stand-in: a fake CuPy whose arrays expose host memory through
  ``__cuda_array_interface__``, and a CPU context flagged as CUDA on the Python side. The C library
  then runs its CPU code on those pointers, so the model takes exactly its GPU code paths in Python
  and must give the CPU model's results bit for bit;
- on a GPU (marked ``gpu``, run with ``--run-gpu``; skipped without the CUDA backend, a visible GPU
  or CuPy, like tests/test_cuda.py): NIN logits and gradients on CUDA against the CPU model.
"""
from __future__ import annotations

import contextlib
import sys
import types

import numpy as np
import pytest

import perforated as P
from perforated.graph.model import Model
from perforated.graph.plan import PerforationPlan
from helpers import gpu_test
from cases import MODEL_INPUT as INPUT, MODEL_ROWS as ROWS, TINY_ROWS

CUDA_BUILD = "CUDA on" in P.build_info()


# --- everywhere: what a machine without the CUDA backend, a GPU or CuPy answers ---------------------

@pytest.mark.skipif(CUDA_BUILD, reason="the loaded library has the CUDA backend")
def test_cpu_build_model_cuda_is_unsupported():
    with pytest.raises(P.UnsupportedError, match=r"Model: device='cuda' is not available: .*"
                                                 r"rebuild with -DPERF_WITH_CUDA=ON"):
        Model("nin", 2, device="cuda")


@pytest.mark.skipif(not CUDA_BUILD or P.cuda_available(), reason="needs a CUDA build on a machine without a GPU")
def test_cuda_build_without_gpu_model_says_no_device():
    with pytest.raises(P.InvalidArgumentError, match=r"Model: device='cuda' is not available: .*"
                                                     r"CUDA devices found: 0"):
        Model("nin", 2, device="cuda")


def test_model_device_argument_is_checked():
    with pytest.raises(ValueError, match="Model: device must be 'cpu' or 'cuda', got 'gpu'"):
        Model("nin", 2, device="gpu")
    with pytest.raises(TypeError, match="Model: context must be a perforated.Context or None, got str"):
        Model("nin", 2, context="cuda")
    model = Model("nin", 2, context=P.Context("cpu"))  # a CPU context is the CPU model
    assert model.device == "cpu" and model.context is None and isinstance(model.x, np.ndarray)


def test_layer_functions_check_the_context():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(TypeError, match=r"relu: numpy arrays run on the CPU: context must be None or a CPU "
                                        r"Context, got 'cuda'"):
        P.relu(x, context="cuda")
    np.testing.assert_array_equal(P.relu(x, context=P.Context("cpu")), x)
    fake = _FakeGpu(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"relu: GPU arrays need a CUDA context, got context=Context\('cpu', 0\)"):
        P.relu(fake, context=P.Context("cpu"))


# --- everywhere: the model's GPU code paths on host memory ------------------------------------------

class _FakeGpu:
    """Host memory posing as GPU memory (``__cuda_array_interface__``), with the few CuPy array
    operations the model uses: reshape views, ``[...] =``, shape, nbytes."""

    def __init__(self, host: np.ndarray):
        assert host.flags.c_contiguous
        self.host = host

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.host.shape, "typestr": self.host.dtype.str, "strides": None,
                "data": (self.host.ctypes.data, False), "version": 3}

    shape = property(lambda self: self.host.shape)
    dtype = property(lambda self: self.host.dtype)
    nbytes = property(lambda self: self.host.nbytes)

    def reshape(self, *shape):
        return _FakeGpu(self.host.reshape(*shape))

    def __setitem__(self, key, value):
        if isinstance(value, np.ndarray):  # CuPy refuses implicit host arrays: so does the fake
            raise TypeError("implicit host -> device assignment")
        self.host[key] = value.host if isinstance(value, _FakeGpu) else value

    # the arithmetic SGD does on parameters (in place, and with numpy scalars as CuPy allows)
    __array_ufunc__ = None  # numpy scalars defer to the operators below

    def __imul__(self, other):
        self.host *= _host(other)
        return self

    def __iadd__(self, other):
        self.host += _host(other)
        return self

    def __isub__(self, other):
        self.host -= _host(other)
        return self

    def __mul__(self, other):
        return _FakeGpu(np.ascontiguousarray(self.host * _host(other)))

    __rmul__ = __mul__

    # the arithmetic of batch normalisation's running statistics (perforated.ops.batchnorm)
    def __add__(self, other):
        return _FakeGpu(np.ascontiguousarray(self.host + _host(other)))

    def __sub__(self, other):
        return _FakeGpu(np.ascontiguousarray(self.host - _host(other)))

    def __rtruediv__(self, other):
        return _FakeGpu(np.ascontiguousarray(_host(other) / self.host))

    def astype(self, dtype):
        return _FakeGpu(self.host.astype(dtype))


def _fake_cupy() -> types.ModuleType:
    cp = types.ModuleType("cupy")
    cp.float32 = np.float32
    cp.zeros = lambda shape, dtype=np.float32: _FakeGpu(np.zeros(shape, dtype))
    cp.empty = lambda shape, dtype=np.float32: _FakeGpu(np.full(shape, np.nan, dtype))  # unwritten = NaN
    cp.zeros_like = lambda a: _FakeGpu(np.zeros_like(a.host))
    cp.asarray = lambda a: a if isinstance(a, _FakeGpu) else _FakeGpu(np.array(a, order="C"))
    cp.asnumpy = lambda a: a.host.copy()

    def copyto(dst, src, casting="same_kind"):
        np.copyto(dst.host, src.host, casting=casting)

    cp.copyto = copyto
    cp.float64 = np.float64
    for name in ("maximum", "square", "sqrt"):  # element-wise functions, computed on the host memory
        setattr(cp, name, _on_host(getattr(np, name)))
    stream = types.SimpleNamespace(ptr=0, synchronize=lambda: None)
    cp.cuda = types.SimpleNamespace(Device=lambda index=0: contextlib.nullcontext(),
                                    get_current_stream=lambda: stream, is_available=lambda: False)
    return cp


def _on_host(f):
    return lambda *args: _FakeGpu(np.ascontiguousarray(f(*(_host(a) for a in args))))


@pytest.fixture
def fake_device(monkeypatch):
    """A CPU context that the Python side treats as CUDA, with the fake CuPy installed."""
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    ctx = P.Context("cpu")
    ctx.device = "cuda"  # is_cuda: the bindings take their GPU-array paths; C runs CPU code
    return ctx


def _host(a):
    return a.host if isinstance(a, _FakeGpu) else a


def _pair(network, batch, fake_device, **kw):
    # the fake device runs the layer steps; the CPU model runs them too (not the channels-last engine,
    # whose sums are ordered differently), so the two agree bit for bit
    cpu = Model(network, batch, inference="layers", **kw)
    dev = Model(network, batch, context=fake_device, **kw)
    assert dev.device == "cuda" and isinstance(dev.x, _FakeGpu) and isinstance(dev.logits, _FakeGpu)
    assert all(isinstance(p[k], _FakeGpu) for p in dev.params.values() for k in ("weight", "bias"))
    return cpu, dev


@pytest.mark.parametrize("perforated", [False, True], ids=["dense", "perforated"])
def test_fake_device_nin_matches_cpu(rng, fake_device, perforated):
    plan = PerforationPlan.uniform_rate("nin", 0.5, kind="uniform", seed=1) if perforated else None
    cpu, dev = _pair("nin", 2, fake_device, plan=plan)
    x = rng.standard_normal((2, 3, 32, 32))  # float64: both models cast it (same_kind)
    np.testing.assert_array_equal(_host(dev.forward(x)), cpu.forward(x))
    labels = np.array([1, 7])
    np.testing.assert_array_equal(_host(dev.loss(labels)[0]), cpu.loss(labels)[0])
    cpu.backward(labels)
    dev.backward(labels)
    for name in ("conv1", "conv2", "cccp6"):
        for key in ("weight", "bias"):
            np.testing.assert_array_equal(_host(dev.params.grads[name][key]), cpu.params.grads[name][key])


@pytest.mark.parametrize("masked", [False, True])
def test_fake_device_every_step_kind_matches_cpu(rng, fake_device, masked):
    """LRN, dropout (training), grouped conv, an FC after a compact tensor (explicit interpolation)."""
    masks = None
    if masked:
        masks = {"c1": P.make_mask("uniform", (9, 11), 0.6, seed=2), "c2": P.make_mask("grid", (4, 5), 0.5, seed=3)}
    kw = dict(masks=masks, input_shape=INPUT, classes=5, seed=3)
    cpu, dev = _pair(ROWS, 3, fake_device, **kw)
    assert masked == any(s.kind == "interp" for s in dev.steps)
    x = rng.standard_normal((3,) + INPUT).astype(np.float32)
    labels = np.array([0, 3, 4])
    for model in (cpu, dev):
        model.forward(x, training=True)
        model.loss(labels)
        model.backward(labels)
    np.testing.assert_array_equal(_host(dev.logits), cpu.logits)
    for name, p in cpu.params.grads.items():
        for key, grad in p.items():
            np.testing.assert_array_equal(_host(dev.params.grads[name][key]), grad, err_msg=f"{name}/{key}")


def _fractional_kw():
    rows = [(k, n, dict(p, fractional=True) if n == "c1" else p) for k, n, p in ROWS]
    return rows, dict(masks={"c1": P.make_mask("grid", (9, 11), 0.6, seed=2)}, input_shape=INPUT, classes=5, seed=3)


def test_fake_device_fractional_stride_matches_cpu(rng, fake_device):
    """A fractional-stride conv (its grid read as a smaller map) takes the GPU paths of the model."""
    rows, kw = _fractional_kw()
    cpu, dev = _pair(rows, 3, fake_device, **kw)
    x = rng.standard_normal((3,) + INPUT).astype(np.float32)
    labels = np.array([0, 3, 4])
    for model in (cpu, dev):
        model.forward(x)
        model.loss(labels)
        model.backward(labels)
    np.testing.assert_array_equal(_host(dev.logits), cpu.logits)
    np.testing.assert_array_equal(_host(dev.params.grads["c1"]["weight"]), cpu.params.grads["c1"]["weight"])


def test_fake_device_weights_round_trip(tmp_path, fake_device):
    cpu, dev = _pair("nin", 1, fake_device, seed=5)
    for name, p in cpu.params.items():  # drawn on the host with the same seed
        np.testing.assert_array_equal(_host(dev.params[name]["weight"]), p["weight"])
    dev.save_weights(tmp_path / "w.npz")
    other = Model("nin", 1, weights=tmp_path / "w.npz")
    np.testing.assert_array_equal(other.params["conv1"]["weight"], cpu.params["conv1"]["weight"])
    again = Model("nin", 1, weights=dev.params, context=fake_device)  # a dict of GPU arrays
    np.testing.assert_array_equal(_host(again.params["conv3"]["weight"]), cpu.params["conv3"]["weight"])
    rows = dev.profile(repeat=1)
    assert [r["layer"] for r in rows] == [s.name for s in dev.steps]
    assert dev.activation_bytes() == cpu.activation_bytes()


def _assert_same(dev_tree, cpu_tree, what):
    for name, p in cpu_tree.items():
        for key, v in p.items():
            np.testing.assert_array_equal(_host(dev_tree[name][key]), v, err_msg=f"{what} {name}/{key}")


def test_fake_device_batchnorm_model_matches_cpu(rng, fake_device):
    """Model(batchnorm=True) on the device paths (statistics and running averages in device arrays,
    every call on the model's context): training steps, an inference forward and its backward,
    calibration and the folded weights give the CPU model's results bit for bit."""
    from perforated.train import sgd as tr

    cpu, dev = _pair(TINY_ROWS, 4, fake_device, input_shape=(3, 6, 6), classes=3, seed=1, batchnorm=True)
    steps = [s for s in dev.steps if s.kind == "batchnorm"]
    assert len(steps) == 2 and all(isinstance(a, _FakeGpu) for s in steps
                                   for a in (s.y, s.mean, s.invstd, *s.running.values()))
    x, labels = rng.standard_normal((4, 3, 6, 6)).astype(np.float32), np.array([0, 1, 2, 1])
    for training in (True, True, False):  # the last: running statistics, the affine backward
        for model in (cpu, dev):
            model.forward(x, training=training)
            model.loss(labels)
            model.backward(labels)
            tr.SGD(model, 0.0, 0.0).step(0.1)
        np.testing.assert_array_equal(_host(dev.logits), cpu.logits)
        _assert_same(dev.params.grads, cpu.params.grads, "grad")
        _assert_same({s.name: s.running for s in steps}, {s.name: s.running for s in cpu.steps
                                                           if s.kind == "batchnorm"}, "running")
    _assert_same(dev.deploy_params(), cpu.deploy_params(), "folded")
    for model in (cpu, dev):
        model.calibrate_batchnorm(x)
    _assert_same(dev.params, cpu.params, "calibrated")
    np.testing.assert_array_equal(_host(dev.forward(x)), cpu.forward(x))


def test_fake_device_batchnorm_training_matches_cpu(tmp_path, rng, fake_device, monkeypatch):
    """train --batchnorm on the device paths: calibration from plain weights, running statistics in
    the checkpoint, resume, and the saved (folded) weights, as on the CPU."""
    import perforated._c.device as dev_mod
    from perforated.train import sgd as tr
    from test_train import _tiny_nin_splits

    monkeypatch.setattr(dev_mod, "default_context", lambda index=None: fake_device)
    # the CPU teacher runs the layer steps as the device does (bit-equal logits), not the engine
    monkeypatch.setattr(Model, "_use_engine", lambda self: False)
    splits = _tiny_nin_splits(rng)
    start = tmp_path / "start.npz"
    Model("nin", 4, seed=9).save_weights(start)
    cfg = dict(network="nin", epochs=2, batch=4, lr=0.01, seed=3, batchnorm=True, weights=str(start))
    cpu = tr.train(tr.TrainConfig(**cfg), tmp_path / "cpu", splits=splits, stream=None)
    tr.train(tr.TrainConfig(device="cuda", **cfg), tmp_path / "dev", splits=splits, stream=None, stop_after=1)
    dev = tr.train(tr.TrainConfig(device="cuda"), tmp_path / "dev", resume=True, splits=splits, stream=None)
    assert isinstance(dev["model"].params["conv1_bn"]["weight"], _FakeGpu)
    assert [h["train_loss"] for h in dev["history"]] == [h["train_loss"] for h in cpu["history"]]
    _assert_same(dev["model"].params, cpu["model"].params, "param")
    with np.load(tmp_path / "dev" / "weights.npz") as got, np.load(tmp_path / "cpu" / "weights.npz") as want:
        assert got.files == want.files
        for key in (k for k in want.files if "/" in k):  # the folded weights (not _meta, _preprocess)
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_fake_device_distillation_matches_cpu(tmp_path, rng, fake_device, monkeypatch):
    """train --teacher on the device paths (the teacher on the device too, the gradient of the
    distillation loss copied to it through Model.backward_logits), as on the CPU."""
    import perforated._c.device as dev_mod
    from perforated.train import sgd as tr
    from test_train import _tiny_nin_splits

    monkeypatch.setattr(dev_mod, "default_context", lambda index=None: fake_device)
    # the CPU teacher runs the layer steps as the device does (bit-equal logits), not the engine
    monkeypatch.setattr(Model, "_use_engine", lambda self: False)
    splits = _tiny_nin_splits(rng)
    teacher, start = tmp_path / "teacher.npz", tmp_path / "start.npz"
    Model("nin", 4, seed=8).save_weights(teacher)
    Model("nin", 4, seed=9).save_weights(start)
    cfg = dict(network="nin", epochs=1, batch=4, lr=0.01, seed=3, weights=str(start), teacher=str(teacher))
    cpu = tr.train(tr.TrainConfig(**cfg), tmp_path / "cpu", splits=splits, stream=None)
    dev = tr.train(tr.TrainConfig(device="cuda", **cfg), tmp_path / "dev", splits=splits, stream=None)
    assert isinstance(dev["model"].params["conv1"]["weight"], _FakeGpu)
    assert [h["train_loss"] for h in dev["history"]] == [h["train_loss"] for h in cpu["history"]]
    _assert_same(dev["model"].params, cpu["model"].params, "param")
    with pytest.raises(TypeError, match="dlogits is a GPU array, this model runs on the CPU"):
        Model("nin", 4).backward_logits(dev["model"].logits)


def test_model_cuda_without_cupy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    ctx = P.Context("cpu")
    ctx.device = "cuda"
    with pytest.raises(ImportError, match=r"Model: device='cuda' .*CuPy is not installed: "
                                          r"pip install 'perforated\[cuda\]'"):
        Model("nin", 1, context=ctx)


# --- GPU: the CUDA model against the CPU model --------------------------------------------------

@gpu_test
@pytest.mark.parametrize("perforated", [False, True], ids=["dense", "perforated"])
def test_nin_cuda_matches_cpu(rng, cp, perforated):
    plan = PerforationPlan.uniform_rate("nin", 0.5, kind="uniform", seed=1) if perforated else None
    cpu = Model("nin", 4, plan=plan)
    dev = Model("nin", 4, plan=plan, device="cuda")
    x = rng.standard_normal((4, 3, 32, 32), dtype=np.float32)
    want = cpu.forward(x)
    got = dev.forward(x)  # numpy input: copied to the GPU
    assert isinstance(got, cp.ndarray)
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(cp.asnumpy(got), want, rtol=1e-3, atol=1e-4 * scale)
    labels = np.array([0, 3, 9, 1])
    cpu.loss(labels)
    dev.loss(labels)
    cpu.backward(labels)
    dev.backward(labels)
    for name in ("conv1", "conv3", "cccp6"):
        want = cpu.params.grads[name]["weight"]
        np.testing.assert_allclose(cp.asnumpy(dev.params.grads[name]["weight"]), want, rtol=1e-3,
                                   atol=1e-4 * float(np.abs(want).max()), err_msg=name)


@gpu_test
def test_fractional_stride_cuda_matches_cpu(rng, cp):
    rows, kw = _fractional_kw()
    cpu, dev = Model(rows, 3, **kw), Model(rows, 3, device="cuda", **kw)
    x = rng.standard_normal((3,) + INPUT).astype(np.float32)
    want = cpu.forward(x)
    np.testing.assert_allclose(cp.asnumpy(dev.forward(x)), want, rtol=1e-4, atol=1e-4)


@gpu_test
def test_small_network_on_own_context_matches_cpu(rng, cp):
    """Every step kind, on a context of its own (not the default one), with a GPU input array."""
    masks = {"c1": P.make_mask("uniform", (9, 11), 0.6, seed=2), "c2": P.make_mask("grid", (4, 5), 0.5, seed=3)}
    kw = dict(masks=masks, input_shape=INPUT, classes=5, seed=3)
    cpu = Model(ROWS, 3, **kw)
    ctx = P.Context("cuda", 0)
    dev = Model(ROWS, 3, context=ctx, **kw)
    x = rng.standard_normal((3,) + INPUT).astype(np.float32)
    want = cpu.forward(x, training=True)
    got = dev.forward(cp.asarray(x), training=True)
    dev.synchronize()
    np.testing.assert_allclose(cp.asnumpy(got), want, rtol=1e-4, atol=1e-4)


@gpu_test
def test_batchnorm_nin_cuda_matches_cpu(rng, cp):
    """NIN with batch normalisation on CUDA against the CPU: a training step (logits, gradients of
    the convs and of gamma / beta, running statistics), then inference and the folded weights."""
    cpu = Model("nin", 4, seed=2, batchnorm=True)
    dev = Model("nin", 4, seed=2, batchnorm=True, device="cuda")
    x = rng.standard_normal((4, 3, 32, 32), dtype=np.float32)
    labels = np.array([0, 3, 9, 1])

    def near(got, want, what):
        got = got if isinstance(got, np.ndarray) else cp.asnumpy(got)
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(want).max())),
                                   err_msg=what)

    near(dev.forward(x, training=True), cpu.forward(x, training=True), "training logits")
    for model in (cpu, dev):
        model.loss(labels)
        model.backward(labels)
    for name in ("conv1", "conv1_bn", "conv3", "cccp5_bn", "cccp6"):
        for key in ("weight", "bias"):
            near(dev.params.grads[name][key], cpu.params.grads[name][key], f"grad {name}/{key}")
    bn_cpu = [s for s in cpu.steps if s.kind == "batchnorm"]
    bn_dev = [s for s in dev.steps if s.kind == "batchnorm"]
    assert isinstance(bn_dev[0].running["var"], cp.ndarray)
    for a, b in zip(bn_dev, bn_cpu):
        for key in ("mean", "var"):
            near(a.running[key], b.running[key], f"{a.name} running {key}")
    near(dev.forward(x), cpu.forward(x), "inference logits")
    folded = dev.deploy_params()  # host arrays
    for name, p in cpu.deploy_params().items():
        for key, v in p.items():
            near(folded[name][key], v, f"folded {name}/{key}")


def test_fake_device_training_matches_cpu_training(tmp_path, rng, fake_device, monkeypatch):
    """perforated.train with device='cuda' (here the stand-in) trains, checkpoints, resumes and
    evaluates exactly as on the CPU: SGD's arithmetic runs on the device arrays, metrics on the host.
    The device is where a run goes on now (the resume's argument), not part of the saved run."""
    import perforated._c.device as dev_mod
    from perforated.train import sgd as tr
    from test_train import _tiny_nin_splits

    monkeypatch.setattr(dev_mod, "default_context", lambda index=None: fake_device)
    # the CPU teacher runs the layer steps as the device does (bit-equal logits), not the engine
    monkeypatch.setattr(Model, "_use_engine", lambda self: False)
    splits = _tiny_nin_splits(rng)
    cfg = dict(network="nin", epochs=2, batch=4, lr=0.01, seed=3, progress=1, init_scale={"cccp6": 0.5})
    cpu = tr.train(tr.TrainConfig(**cfg), tmp_path / "cpu", splits=splits, stream=None)
    tr.train(tr.TrainConfig(device="cuda", **cfg), tmp_path / "dev", splits=splits, stream=None, stop_after=1)
    dev = tr.train(tr.TrainConfig(device="cuda"), tmp_path / "dev", resume=True, splits=splits, stream=None)
    assert dev["config"].device == "cuda" and isinstance(dev["model"].params["conv1"]["weight"], _FakeGpu)
    assert [h["train_loss"] for h in dev["history"]] == [h["train_loss"] for h in cpu["history"]]
    assert dev["history"][-1]["test_top1_error"] == cpu["history"][-1]["test_top1_error"]
    for name, p in cpu["model"].params.items():
        for key in p:
            np.testing.assert_array_equal(_host(dev["model"].params[name][key]), p[key])
    with np.load(tmp_path / "dev" / "weights.npz") as w:
        np.testing.assert_array_equal(w["conv1/weight"], cpu["model"].params["conv1"]["weight"])
    cpu_resumed = tr.train(tr.TrainConfig(epochs=3), tmp_path / "dev", resume=True, splits=splits, stream=None)
    assert cpu_resumed["config"].device == "cpu" and isinstance(cpu_resumed["model"].params["conv1"]["weight"],
                                                                 np.ndarray)
