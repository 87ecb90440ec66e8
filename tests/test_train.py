"""Data loading (folders, tarballs, cifar-10-batches-py), preprocessing, SGD, checkpoints and resume,
and the train / evaluate commands, on tiny synthetic data written to tmp_path."""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import tarfile

import numpy as np
import pytest
from PIL import Image

from perforated.train import evaluate as ev
from perforated.train import sgd as tr
from perforated.data import (Preprocess, Split, augment, batches, load_cifar_batches, load_dataset,
                             load_image_folder, num_batches)
from perforated.graph.model import Model
from perforated.graph.plan import PerforationPlan

from helpers import assert_same_params
from cases import make_batches


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFORATED_CACHE", str(tmp_path / "cache"))


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_folder(root, rng, size=8, per_class=2, classes=("dog", "cat", "bird")):
    """root/{train,test}/<class>/<i>.png with random pixels; returns {(split, class, i): HWC array}."""
    images = {}
    for split in ("train", "test"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                (d / f"{i:04d}.png").write_bytes(_png(a))
                images[(split, c, i)] = a
    return images


# -- loaders -------------------------------------------------------------------------------------

def test_image_folder_classes_sorted_and_cached(tmp_path, rng):
    images = make_folder(tmp_path / "ds", rng)
    splits = load_dataset(tmp_path / "ds")
    assert sorted(splits) == ["test", "train"]
    s = splits["train"]
    assert s.classes == ["bird", "cat", "dog"]
    assert s.images.shape == (6, 3, 8, 8) and s.images.dtype == np.uint8
    assert s.labels.tolist() == [0, 0, 1, 1, 2, 2] and s.labels.dtype == np.int64
    np.testing.assert_array_equal(s.images[2], images[("train", "cat", 0)].transpose(2, 0, 1))
    cached = list((tmp_path / "cache").glob("*.npz"))
    assert len(cached) == 1 and not list((tmp_path / "cache").glob("*.tmp"))
    again = load_dataset(tmp_path / "ds")  # from the cache
    np.testing.assert_array_equal(again["test"].images, splits["test"].images)
    assert load_image_folder(tmp_path / "ds")["train"].classes == s.classes


def test_tarball_of_image_folder(tmp_path, rng):
    images = make_folder(tmp_path / "src" / "cifar10", rng)
    tar = tmp_path / "tiny.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        t.add(tmp_path / "src" / "cifar10", arcname="cifar10")
    splits = load_dataset(tar)
    assert splits["test"].classes == ["bird", "cat", "dog"]
    np.testing.assert_array_equal(splits["test"].images[5], images[("test", "dog", 1)].transpose(2, 0, 1))
    assert len(list((tmp_path / "cache").glob("tiny-*.npz"))) == 1
    os.utime(tar, (1, 1))  # the same tarball laid again (a new session's shared/): the cache still serves
    load_dataset(tar)
    assert len(list((tmp_path / "cache").glob("tiny-*.npz"))) == 1
    with tarfile.open(tar, "w:gz") as t:  # other content: decoded afresh
        t.add(tmp_path / "src" / "cifar10" / "test", arcname="cifar10/test")
    assert "train" not in load_dataset(tar)
    assert len(list((tmp_path / "cache").glob("tiny-*.npz"))) == 2


def test_cifar_batches(tmp_path, rng):
    data, labels = make_batches(tmp_path / "cifar-10-batches-py", rng)
    for path in (tmp_path, tmp_path / "cifar-10-batches-py"):  # the release's parent or itself
        splits = load_dataset(path)
        assert splits["train"].images.shape == (8, 3, 32, 32)
        np.testing.assert_array_equal(splits["train"].images.reshape(8, -1), data)
        np.testing.assert_array_equal(splits["train"].labels, labels)
        assert splits["test"].classes[3] == "c3" and len(splits["test"]) == 4


def test_errors_name_the_path(tmp_path, rng):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_dataset(missing)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(ValueError, match="not a tar archive"):
        load_dataset(junk)
    empty = tmp_path / "empty"
    (empty / "train" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images found"):
        load_dataset(empty, cache=False)
    bad = tmp_path / "bad"
    make_folder(bad, rng)
    (bad / "train" / "cat" / "9999.jpg").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot decode image .*9999.jpg"):
        load_dataset(bad, cache=False)
    mixed = tmp_path / "mixed"
    make_folder(mixed, rng)
    (mixed / "test" / "cat" / "big.png").write_bytes(_png(np.zeros((9, 9, 3), np.uint8)))
    with pytest.raises(ValueError, match="big.png .* is 9x9, expected every image to be 8x8"):
        load_dataset(mixed, cache=False)


def test_cifar_batches_errors(tmp_path, rng):
    d = tmp_path / "cifar-10-batches-py"
    make_batches(d, rng)
    (d / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="must hold data_batch_1..5 and test_batch"):
        load_cifar_batches(d)
    (d / "test_batch").write_bytes(b"\x80garbage")
    with pytest.raises(ValueError, match="test_batch is not a CIFAR-10 pickle batch"):
        load_cifar_batches(d)
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match=r"expected uint8 data \(N, 3072\)"):
        load_cifar_batches(d)


# -- preprocessing, augmentation, batches --------------------------------------------------------

def _split(rng, n=40, c=3, h=8, w=8, classes=10):
    return Split(rng.integers(0, 256, (n, c, h, w), dtype=np.uint8), rng.integers(0, classes, n).astype(np.int64),
                 [str(i) for i in range(classes)])


def test_channel_normalisation(rng):
    s = _split(rng)
    p = Preprocess.fit(s)
    x = p(s.images)
    assert x.dtype == np.float32 and x.shape == s.images.shape
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(axis=(0, 2, 3)), 1, atol=1e-3)
    q = Preprocess.from_json(p.to_json())
    np.testing.assert_allclose(q(s.images), x, rtol=1e-6)


def test_zca_whitens(rng):
    s = _split(rng, n=600, c=3, h=3, w=3)
    p = Preprocess.fit(s, "zca", epsilon=1e-6)
    x = p(s.images).reshape(600, -1).astype(np.float64)
    cov = x.T @ x / 600
    np.testing.assert_allclose(cov, np.eye(27), atol=0.05)  # GCN removes one direction per image
    assert json.loads(p.to_json()) == {"mode": "zca", "epsilon": 1e-6, "gcn_scale": 55.0}
    np.testing.assert_allclose(Preprocess.from_json(p.to_json(), s)(s.images[:3]), p(s.images[:3]), atol=1e-4)


def test_augment_deterministic_and_shapes(rng):
    x = rng.standard_normal((6, 3, 8, 8)).astype(np.float32)
    a = augment(x.copy(), np.random.default_rng(5))
    b = augment(x.copy(), np.random.default_rng(5))
    c = augment(x.copy(), np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert a.shape == x.shape and not np.array_equal(a, c)
    flipped = augment(x.copy(), np.random.default_rng(1), pad=0)  # flips only
    for i in range(6):
        assert np.array_equal(flipped[i], x[i]) or np.array_equal(flipped[i], x[i, :, :, ::-1])


def test_batches_pad_and_drop(rng):
    s = _split(rng, n=10)
    p = Preprocess.fit(s)
    got = list(batches(s, 4, p))
    assert [b.valid for b in got] == [4, 4, 2] and num_batches(10, 4) == 3
    last = got[-1]
    assert last.x.shape == (4, 3, 8, 8) and last.x.flags.c_contiguous and last.x.dtype == np.float32
    assert last.labels.dtype == np.int64
    np.testing.assert_array_equal(last.labels, s.labels[[8, 9, 8, 9]])
    assert [b.valid for b in batches(s, 4, p, last="drop")] == [4, 4] and num_batches(10, 4, "drop") == 2
    r1 = [b.index for b in batches(s, 4, p, np.random.default_rng(3), shuffle=True, augment_data=True)]
    r2 = [b.index for b in batches(s, 4, p, np.random.default_rng(3), shuffle=True, augment_data=True)]
    np.testing.assert_array_equal(np.concatenate(r1), np.concatenate(r2))
    assert sorted(np.concatenate(r1)[:10]) == list(range(10))
    with pytest.raises(ValueError, match="need an rng"):
        next(batches(s, 4, p, shuffle=True))


# -- SGD, checkpoints, commands ------------------------------------------------------------------

def test_sgd_step_reduces_loss(rng):
    rows = [("conv", "c1", dict(out=8, kernel=3, pad=1)), ("relu", "r1", {}),
            ("conv", "c2", dict(out=3, kernel=1)), ("pool", "gap", dict(mode="avg", global_=True))]
    m = Model(rows, 4, input_shape=(3, 6, 6), classes=3, seed=1)
    x = rng.standard_normal((4, 3, 6, 6)).astype(np.float32)
    y = np.array([0, 1, 2, 1])
    sgd = tr.SGD(m, momentum=0.9, weight_decay=1e-4)
    m.forward(x, training=True)
    before = float(m.loss(y)[0].mean())
    for _ in range(5):
        m.forward(x, training=True)
        m.loss(y)
        m.backward(y)
        sgd.step(0.05)
    m.forward(x)
    assert float(m.loss(y)[0].mean()) < before
    with pytest.raises(ValueError, match="unknown layers"):
        tr.SGD(m, 0.9, 0.0, lr_mult={"nope": 1.0})


def test_learning_rate_schedules():
    cfg = tr.TrainConfig(epochs=10, lr=0.1, warmup=1.0)
    assert tr.learning_rate(cfg, 0.5) < 0.06
    assert tr.learning_rate(cfg, 1.0) == pytest.approx(0.1)
    assert tr.learning_rate(cfg, 10.0) == pytest.approx(0.0, abs=1e-12)
    step = tr.TrainConfig(epochs=10, lr=0.1, schedule="step", steps=[5, 8], gamma=0.1)
    assert [round(tr.learning_rate(step, e), 6) for e in (0, 5, 8)] == [0.1, 0.01, 0.001]


def _tiny_nin_splits(rng):
    return {"train": Split(rng.integers(0, 256, (8, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 8),
                           [str(i) for i in range(10)]),
            "test": Split(rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 4),
                          [str(i) for i in range(10)])}


def test_checkpoint_resume_equals_uninterrupted(tmp_path, rng):
    splits = _tiny_nin_splits(rng)
    cfg = tr.TrainConfig(network="nin", epochs=2, batch=4, lr=0.01, seed=3, progress=1)
    full = tr.train(cfg, tmp_path / "a", splits=splits, stream=None)
    part = tr.train(cfg, tmp_path / "b", splits=splits, stream=None, stop_after=1)
    assert len(part["history"]) == 1
    state = tr.load_checkpoint(tmp_path / "b" / "checkpoint.npz")
    assert state["epoch"] == 1 and state["config"]["batch"] == 4 and "rng" in state
    assert set(state["dropout_calls"]) == {"drop1", "drop2"}
    resumed = tr.train(tr.TrainConfig(), tmp_path / "b", resume=True, splits=splits, stream=None)
    assert resumed["config"].batch == 4  # the checkpoint's config wins
    assert_same_params(resumed["model"].params, full["model"].params)
    a = tr.load_checkpoint(tmp_path / "a" / "checkpoint.npz")
    b = tr.load_checkpoint(tmp_path / "b" / "checkpoint.npz")
    for k in a["arrays"]:
        np.testing.assert_array_equal(a["arrays"][k], b["arrays"][k])
    assert a["rng"] == b["rng"]
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    w = Model("nin", 4, weights=tmp_path / "a" / "weights.npz")  # extra keys ignored by load_weights
    np.testing.assert_array_equal(w.params["conv1"]["weight"], full["model"].params["conv1"]["weight"])
    # a finished run carried without its weights file gets it back, exactly, from its checkpoint
    saved = dict(np.load(tmp_path / "a" / "weights.npz"))
    (tmp_path / "a" / "weights.npz").unlink()
    tr.train(cfg, tmp_path / "a", resume=True, splits=splits, stream=None)
    again = dict(np.load(tmp_path / "a" / "weights.npz"))
    assert set(again) == set(saved)
    for k in saved:
        np.testing.assert_array_equal(again[k], saved[k])
    assert (tmp_path / "a" / "log.jsonl").read_text().count("\n") == 2
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        tr.train(cfg, tmp_path / "c", resume=True, splits=splits, stream=None)


def test_train_and_evaluate_commands(tmp_path, rng, capsys):
    make_batches(tmp_path / "cifar-10-batches-py", rng)
    out = tmp_path / "run"
    assert tr.main(["--data", str(tmp_path), "--epochs", "1", "--batch", "4", "--lr", "0.01",
                    "--out", str(out), "--progress", "1"]) == 0
    captured = capsys.readouterr()
    assert re.search(r"epoch 1/1 batch 2/2 loss [\d.]+ acc [\d.]+% lr \S+ [\d.]+ img/s ETA", captured.err)
    assert "top-1 error:" in captured.out
    assert ev.main(["--network", "nin", "--weights", str(out / "weights.npz"), "--data", str(tmp_path),
                    "--batch", "4"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^top-1 error: \d+\.\d\d%$", printed, re.M)
    assert re.search(r"^top-5 error: \d+\.\d\d%$", printed, re.M)
    assert "images: 4 (test)" in printed
    assert ev.main(["--network", "nin", "--weights", str(out / "weights.npz"), "--data", str(tmp_path),
                    "--batch", "4", "--flip"]) == 0
    assert "images: 4 (test, 2 views: image and mirror)" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="no weights file"):
        ev.evaluate("nin", tmp_path / "none.npz", data=tmp_path)


def test_mid_epoch_checkpoint_resumes_exactly(tmp_path, rng):
    """A run stopped inside an epoch (as a killed one would be, at its last checkpoint_every) resumes
    from that batch with the same shuffle, augmentation and dropout draws as an uninterrupted run."""
    splits = _tiny_nin_splits(rng)
    cfg = tr.TrainConfig(network="nin", epochs=2, batch=2, lr=0.01, seed=5, progress=1, checkpoint_every=1)
    full = tr.train(cfg, tmp_path / "a", splits=splits, stream=None)
    part = tr.train(cfg, tmp_path / "b", splits=splits, stream=None, stop_after_batches=6)
    assert part["history"] and len(part["history"]) == 1  # epoch 1 (4 batches) done, epoch 2 at batch 2
    state = tr.load_checkpoint(tmp_path / "b" / "checkpoint.npz")
    assert state["epoch"] == 1 and state["batch"] == 2
    resumed = tr.train(cfg, tmp_path / "b", resume=True, splits=splits, stream=None)
    assert_same_params(resumed["model"].params, full["model"].params)
    assert [h["train_loss"] for h in full["history"]] == [h["train_loss"] for h in resumed["history"]]
    assert "resumed from" in (tmp_path / "b" / "train.log").read_text()
    with pytest.raises(ValueError, match="checkpoint_every must be >= 0"):
        tr.TrainConfig(checkpoint_every=-1).check()


def test_resumed_finetuning_keeps_the_masks_it_started_with(tmp_path, rng):
    """A fine-tuning run freezes its masks (as positions) in out/plan.json when it starts; resumed, it
    uses those even when the plan's scores file is gone and the plan file was rewritten."""
    splits = _tiny_nin_splits(rng)
    scores = tmp_path / "scores.npz"
    np.savez(scores, conv2=rng.random((16, 16)).astype(np.float32))
    plan_path = tmp_path / "p.json"
    PerforationPlan("nin", {"conv2": {"kind": "impact", "rate": 0.5, "scores": scores.name},
                            "conv1": {"kind": "uniform", "rate": 0.3, "seed": 4}}).save(plan_path)
    cfg = tr.TrainConfig(network="nin", epochs=2, batch=4, lr=0.01, seed=3, plan=str(plan_path))
    full = tr.train(cfg, tmp_path / "a", splits=splits, stream=None)
    tr.train(cfg, tmp_path / "b", splits=splits, stream=None, stop_after=1)
    frozen = PerforationPlan.load(tmp_path / "b" / "plan.json")
    started = {n: m.indices for n, m in full["model"].masks.items()}
    assert set(frozen.layers) == set(started) == {"conv1", "conv2"}
    for name, spec in frozen.layers.items():
        np.testing.assert_array_equal(spec["indices"], started[name])
    scores.unlink()
    PerforationPlan.uniform_rate("nin", 0.5, seed=9).save(plan_path)  # other masks, other layers
    resumed = tr.train(cfg, tmp_path / "b", resume=True, splits=splits, stream=None)
    assert {n: m.indices.tolist() for n, m in resumed["model"].masks.items()} == \
        {n: i.tolist() for n, i in started.items()}
    assert_same_params(resumed["model"].params, full["model"].params)
    assert "masks from" in (tmp_path / "b" / "train.log").read_text()


def _lowrank_plan_and_weights(tmp_path, layers):
    """A NIN low-rank plan saved as tmp_path/plan.json and its decomposed random weights as
    tmp_path/decomposed.npz: (plan path, weights path, weights)."""
    from perforated.search import lowrank as LR

    plan = LR.LowRankPlan("nin", layers)
    plan_path, w_path = tmp_path / "plan.json", tmp_path / "decomposed.npz"
    plan.save(plan_path)
    _, weights = LR.apply_plan(plan, 2, LR.network_weights("nin", seed=2))
    LR.save_weights(weights, w_path)
    return plan_path, w_path, weights


def test_finetune_lowrank_network_and_evaluate(tmp_path, rng):
    """A decomposed (and perforated) NIN fine-tunes from its decomposed weights, changes only through
    training, and evaluates with the same plan; wrong combinations fail with the argument named."""
    from perforated.search import lowrank as LR

    splits = _tiny_nin_splits(rng)
    plan_path, w_path, weights = _lowrank_plan_and_weights(tmp_path, {
        "conv2": {"rank": 16, "method": "channel", "rate": 0.5}, "conv3": {"rank": 30, "method": "spatial"}})
    cfg = tr.TrainConfig(network="nin", epochs=1, batch=4, lr=0.01, seed=1, lowrank=str(plan_path),
                         weights=str(w_path), augment=False)
    out = tr.train(cfg, tmp_path / "run", splits=splits, stream=None)
    model = out["model"]
    assert {"conv2_a", "conv2_b", "conv3_v", "conv3_h"} <= set(model.params) and "conv2_a" in model.masks
    moved = np.abs(model.params["conv2_a"]["weight"] - weights["conv2_a"]["weight"]).max()
    assert 0 < moved < 1  # trained from the decomposed weights, not from a fresh draw
    r = ev.evaluate("nin", tmp_path / "run" / "weights.npz", splits=splits, lowrank=str(plan_path), batch=4)
    assert r["images"] == 4 and 0 <= r["top1_error"] <= 100
    assert r["top1_error"] == pytest.approx(out["history"][-1]["test_top1_error"])
    with pytest.raises(ValueError, match="plan or lowrank"):
        tr.TrainConfig(plan="p.json", lowrank=str(plan_path)).check()
    with pytest.raises(ValueError, match="missing conv2_a/weight"):  # the original weights do not fit
        tr.build_model("nin", 2, lowrank=str(plan_path), weights=LR.network_weights("nin"))
    with pytest.raises(ValueError, match="is for 'nin', not network 'alexnet'"):
        tr.build_model("alexnet", 2, lowrank=str(plan_path))


def test_resumed_lowrank_finetuning_keeps_the_plan_it_started_with(tmp_path, rng):
    """A low-rank fine-tuning run copies its plan to out/lowrank_plan.json when it starts; resumed, it
    uses that copy even when the plan file was rewritten with other ranks and masks."""
    from perforated.search import lowrank as LR

    splits = _tiny_nin_splits(rng)
    layers = {"conv2": {"rank": 16, "method": "channel", "rate": 0.5, "seed": 2}}
    plan_path, w_path, _ = _lowrank_plan_and_weights(tmp_path, layers)
    cfg = tr.TrainConfig(network="nin", epochs=2, batch=4, lr=0.01, seed=1, lowrank=str(plan_path),
                         weights=str(w_path), augment=False)
    full = tr.train(cfg, tmp_path / "a", splits=splits, stream=None)
    tr.train(cfg, tmp_path / "b", splits=splits, stream=None, stop_after=1)
    assert LR.LowRankPlan.load(tmp_path / "b" / "lowrank_plan.json").layers == LR.LowRankPlan.load(plan_path).layers
    LR.LowRankPlan("nin", {"conv2": {"rank": 8, "method": "channel", "rate": 0.3, "seed": 7}}).save(plan_path)
    resumed = tr.train(cfg, tmp_path / "b", resume=True, splits=splits, stream=None)
    np.testing.assert_array_equal(resumed["model"].masks["conv2_a"].indices,
                                  full["model"].masks["conv2_a"].indices)
    assert_same_params(resumed["model"].params, full["model"].params)
    assert "low-rank plan from" in (tmp_path / "b" / "train.log").read_text()


def test_lowrank_command_fits_on_a_dataset_and_keeps_the_normalisation(tmp_path, rng, capsys):
    """perforated.search.lowrank --data DATASET fits on normalised training images and saves the decomposed
    weights with the original's _preprocess; evaluate --lowrank then reads them as train wrote them."""
    from perforated.search import lowrank as LR

    make_batches(tmp_path / "cifar-10-batches-py", rng)
    splits = load_dataset(tmp_path)
    model = Model("nin", 2, seed=4)
    pre = Preprocess.fit(splits["train"], "channel")
    tr.save_weights(model, tmp_path / "w.npz", pre)
    plan, dec = tmp_path / "plan.json", tmp_path / "dec.npz"
    LR.main(["--network", "nin", "--weights", str(tmp_path / "w.npz"), "--ratio", "1.5", "--method", "channel",
             "--data", str(tmp_path), "--fit-images", "8", "--save-plan", str(plan), "--save-weights", str(dec)])
    with np.load(dec) as d:
        assert str(d["_preprocess"]) == pre.to_json() and any(k.endswith("_a/weight") for k in d.files)
    assert ev.main(["--network", "nin", "--weights", str(dec), "--lowrank", str(plan), "--data", str(tmp_path),
                    "--batch", "4"]) == 0
    assert re.search(r"^top-1 error: \d+\.\d\d%$", capsys.readouterr().out, re.M)


def test_resume_reports_only_arguments_the_command_line_changed(tmp_path, rng, capsys):
    make_batches(tmp_path / "cifar-10-batches-py", rng)
    out = str(tmp_path / "run")
    common = ["--data", str(tmp_path), "--batch", "4", "--out", out]
    assert tr.main(common + ["--epochs", "1", "--lr", "0.01"]) == 0
    capsys.readouterr()
    assert tr.main(["--out", out, "--resume", "--data", str(tmp_path)]) == 0  # the defaults are not "given"
    assert "ignoring differing arguments" not in capsys.readouterr().err
    assert tr.main(["--out", out, "--resume", "--data", str(tmp_path), "--lr", "0.5"]) == 0
    assert "ignoring differing arguments {'lr': 0.5}" in capsys.readouterr().err


def test_resume_can_change_the_number_of_epochs(tmp_path, rng):
    splits = _tiny_nin_splits(rng)
    cfg = tr.TrainConfig(network="nin", epochs=3, batch=4, lr=0.01, seed=3)
    tr.train(cfg, tmp_path / "a", splits=splits, stream=None, stop_after=1)
    with pytest.raises(ValueError, match="set_epochs must be >= 1"):
        tr.train(cfg, tmp_path / "a", resume=True, splits=splits, stream=None, set_epochs=0)
    done = tr.train(cfg, tmp_path / "a", resume=True, splits=splits, stream=None, set_epochs=2)
    assert len(done["history"]) == 2 and done["config"].epochs == 2
    assert done["history"][-1]["lr"] == pytest.approx(tr.learning_rate(done["config"], 2 - 1 / 2))
    assert "epochs changed from 3 to 2" in (tmp_path / "a" / "train.log").read_text()


def test_evaluate_flip_averages_the_image_and_its_mirror(rng):
    """Two-view evaluation: a left-right symmetric image is its own mirror, so it scores as one view
    (loss = the cross-entropy of model.loss); a mirrored test set scores exactly as the original."""
    model = Model("nin", 4)
    splits = _tiny_nin_splits(rng)
    pre = Preprocess.fit(splits["train"], "channel")
    half = rng.integers(0, 256, (6, 3, 32, 16), dtype=np.uint8)
    labels = rng.integers(0, 10, 6)
    symmetric = Split(np.concatenate([half, half[..., ::-1]], axis=3), labels, splits["test"].classes)
    one, two = tr.evaluate_split(model, symmetric, pre), tr.evaluate_split(model, symmetric, pre, flip=True)
    assert one["images"] == two["images"] == 6  # the padded last batch is not counted
    assert one["top1_error"] == two["top1_error"] and one["top5_error"] == two["top5_error"]
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    images = rng.integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    plain, mirrored = Split(images, labels, symmetric.classes), Split(images[..., ::-1].copy(), labels, symmetric.classes)
    a, b = tr.evaluate_split(model, plain, pre, flip=True), tr.evaluate_split(model, mirrored, pre, flip=True)
    assert a["top1_error"] == b["top1_error"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert a["loss"] != pytest.approx(tr.evaluate_split(model, plain, pre)["loss"], rel=1e-6)


def test_validation_split_is_held_out_and_the_test_set_waits_for_the_last_epoch(tmp_path, rng):
    from perforated.data import held_out_split

    splits = _tiny_nin_splits(rng)
    splits["train"] = Split(rng.integers(0, 256, (12, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 12),
                            [str(i) for i in range(10)])
    cfg = tr.TrainConfig(network="nin", epochs=2, batch=4, lr=0.01, seed=3, progress=1, val=4)
    run = tr.train(cfg, tmp_path / "v", splits=splits, stream=None)
    first, last = run["history"]
    assert first["val_images"] == 4 and "test_top1_error" not in first  # epoch 1: validation only
    assert last["val_images"] == 4 and last["test_images"] == 4       # the last epoch: both
    log = (tmp_path / "v" / "train.log").read_text()
    assert "training nin on 8 images" in log  # 12 - 4 held out
    # the held-out images are the validation split's, whatever the run's seed
    kept, held = held_out_split(12, 4)
    again_kept, again_held = held_out_split(12, 4)
    np.testing.assert_array_equal(held, again_held)
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(12))
    kept_split, val_split = splits["train"].split_off(4)
    np.testing.assert_array_equal(val_split.labels, splits["train"].labels[held])
    from perforated.train import log as train_log
    text = train_log.table(train_log.read_log(tmp_path / "v"))
    assert "validation top-1" in text.splitlines()[0]
    with pytest.raises(ValueError, match="val must be >= 0"):
        tr.TrainConfig(val=-1).check()
    with pytest.raises(ValueError, match="leaves no training images"):
        tr.train(tr.TrainConfig(network="nin", epochs=1, batch=4, val=12), tmp_path / "w", splits=splits, stream=None)
    with pytest.raises(ValueError, match=r"held must be in \[1, 11\]"):
        held_out_split(12, 0)
