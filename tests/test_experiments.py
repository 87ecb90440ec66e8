"""The accuracy experiments' building blocks: masks per layer, self-contained plans, the mask
comparison's baselines (stride, resize), and bench.nin_accuracy end to end on tiny synthetic data
(resumable, and rendered by bench.report)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import mask_baselines as mb
from bench import mask_comparison as mc
from bench import nin_accuracy as na
from bench import report
from perforated.data import Split
from perforated.ops.masks import count_for_rate
from perforated.graph.model import Model
from perforated.graph.plan import PerforationPlan, layer_masks

from cases import make_batches


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFORATED_CACHE", str(tmp_path / "cache"))


def _impact(rng):
    sizes = Model("nin", 1).output_sizes()
    return {n: rng.random(sizes[n]) for n in ("conv1", "conv2", "conv3")}


@pytest.mark.parametrize("kind", ["uniform", "grid", "pooling", "impact"])
def test_layer_masks_every_kind(kind, rng):
    masks = layer_masks("nin", kind, 0.5, scores=_impact(rng), seed=7)
    assert sorted(masks) == ["conv1", "conv2", "conv3"]
    for i, name in enumerate(["conv1", "conv2", "conv3"]):
        m = masks[name]
        assert m.seed == 7 + i and m.kind == kind
        if kind == "grid":
            assert m.count <= count_for_rate(m.shape, 0.5)
        else:
            assert m.count == count_for_rate(m.shape, 0.5)


def test_layer_masks_impact_needs_scores():
    with pytest.raises(ValueError, match="needs scores for layer 'conv1'"):
        layer_masks("nin", "impact", 0.5)


def test_pooling_plan_before_a_global_pool():
    """conv3 feeds NIN's global average pooling: one window, every weight equal (was a KeyError)."""
    plan = PerforationPlan.uniform_rate("nin", 0.5, kind="pooling")
    masks = Model("nin", 1, plan=plan).masks
    assert masks["conv3"].count == count_for_rate((8, 8), 0.5)


def test_plan_from_masks_round_trip(tmp_path, rng):
    masks = layer_masks("nin", "impact", 2 / 3, scores=_impact(rng))
    path = tmp_path / "plan.json"
    PerforationPlan.from_masks("nin", masks).save(path)
    spec = json.loads(path.read_text())["layers"]["conv2"]
    assert spec["kind"] == "indices" and spec["made_as"] == "impact"
    loaded = Model("nin", 1, plan=path).masks
    for name, m in masks.items():
        np.testing.assert_array_equal(loaded[name].indices, m.indices)


def test_mask_comparison_configurations_run(rng):
    configs = mc.configurations(_impact(rng))
    kinds = {(c["scope"], c["kind"]) for c in configs}
    assert ("conv2", "stride") in kinds and ("network", "resize") in kinds and ("conv2", "resize") not in kinds
    # fractional stride: every rate on conv2; on the whole network the highest leaves pool2 a 2x2 map
    assert sum(c["kind"] == "fractional stride" for c in configs) == 2 * len(mc.RATES) - 1
    assert len(configs) == 2 * 4 * len(mc.RATES) + 3 + len(mc.RATES) + 2 * len(mc.RATES) - 1
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    for c in configs:
        model = c["build"](2)
        side = model.input_shape[-1]
        out = model.forward(np.ascontiguousarray(x[:, :, :side, :side]))
        assert out.shape == (2, 10) and np.isfinite(out).all(), (c["scope"], c["kind"], c["rate"])
        if c["kind"] in ("stride", "fractional stride"):  # an architecture change: fewer multiply-adds
            assert model.multiply_adds() < Model("nin", 1).multiply_adds()


def test_baseline_rates_count_the_positions_really_computed():
    # conv2 is 16x16 with a 5x5 kernel and padding 2: stride 2 computes 8x8, stride 3 computes 6x6
    for stride, rate in ((2, 0.75), (3, 1 - 36 / 256)):
        model = mb.baseline_model(mb.strided_rows(("conv2",), stride))
        assert mb.skipped_rate(model, ("conv2",)) == pytest.approx(rate)
    # fractional stride on the whole network: conv2's grid is drawn on the map conv1's grid left it
    layers = ("conv1", "conv2", "conv3")
    masks = mb.fractional_masks(layers, 0.75)
    assert masks["conv1"].shape == (32, 32) and masks["conv1"].count == 256
    assert masks["conv2"].shape == (8, 8) and masks["conv2"].count == 16  # pool1 of the 16x16 grid
    model = mb.baseline_model(mb.fractional_rows(layers), masks)
    assert mb.skipped_rate(model, layers) == pytest.approx(np.mean([1 - 256 / 1024, 1 - 16 / 256, 1 - 1 / 64]))


def _comparison(kinds, error=16.0, digest="abc", dense_time=0.2):
    rows = [dict(scope=s, kind=k, nominal_rate=0.5, rate=0.5, top1_error=20.0, speedup=2.0)
            for s in mc.SCOPES for k in kinds]
    meta = dict(kinds=list(kinds), images=2000, weights="w.npz", weights_digest=digest, command="cmd " + kinds[0],
                date="today", rounds=3)
    return {"metadata": meta, "dense": {"top1_error": error, "time": dense_time}, "rows": rows}


def test_merge_replaces_only_the_measured_kinds():
    assert [c["kind"] for c in mc.configurations({}, kinds=("stride",))] == ["stride"] * 3
    old = _comparison(mc.ALL_KINDS)
    new = _comparison(("fractional stride",), dense_time=0.25)
    for r in new["rows"]:
        r["top1_error"] = 30.0
    merged = mc.merge(new, old)
    assert [(r["scope"], r["kind"]) for r in merged["rows"]] == [(r["scope"], r["kind"]) for r in old["rows"]]
    assert {r["top1_error"] for r in merged["rows"] if r["kind"] == "fractional stride"} == {30.0}
    assert {r["top1_error"] for r in merged["rows"] if r["kind"] != "fractional stride"} == {20.0}
    assert merged["metadata"]["merged"] == [dict(kinds=["fractional stride"], command="cmd fractional stride",
                                                 date="today", rounds=3, dense_time=0.25, seconds=None)]
    again = mc.merge(new, merged)  # measured again: the older merge record is replaced
    assert len(again["metadata"]["merged"]) == 1
    # an earlier merge of two kinds keeps the one not measured again; a note about replaced rows goes
    noted = dict(old, metadata=dict(old["metadata"], note="about the stride rows", note_kinds=["stride"]))
    assert "note" in mc.merge(new, noted)["metadata"]
    assert "note" not in mc.merge(_comparison(("stride",)), noted)["metadata"]
    one = mc.merge(_comparison(("stride",)), mc.merge(_comparison(("stride", "resize")), old))
    assert [r["kinds"] for r in one["metadata"]["merged"]] == [["resize"], ["stride"]]
    assert one["metadata"]["weights_digest"] == "abc"
    with pytest.raises(ValueError, match="other weights or images"):
        mc.merge(_comparison(("stride",), error=17.0), old)
    with pytest.raises(ValueError, match="other weights or images"):
        mc.merge(_comparison(("stride",), digest="def"), old)


def test_mask_comparison_refuses_to_replace_a_full_table_with_some_kinds(tmp_path, capsys):
    weights = tmp_path / "w.npz"
    weights.write_bytes(b"any file: only its digest is read before the refusal")
    (tmp_path / "mask_comparison.json").write_text(json.dumps(_comparison(mc.ALL_KINDS)))
    argv = ["--weights", str(weights), "--out", str(tmp_path), "--kinds", "stride"]
    with pytest.raises(SystemExit):
        mc.main(argv)
    assert "add --merge to replace only their rows" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # merging: the stored table is of other weights (digest "abc")
        mc.main(argv + ["--merge"])
    assert "holds a comparison of other weights" in capsys.readouterr().err


def test_resize_split(rng):
    split = Split(rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8), np.arange(3), [str(i) for i in range(10)])
    small = mb.resize_split(split, 16)
    assert small.images.shape == (3, 3, 16, 16) and small.images.dtype == np.uint8
    flat = Split(np.full((1, 3, 32, 32), 77, np.uint8), np.zeros(1, int), split.classes)
    assert (mb.resize_split(flat, 23).images == 77).all()


def test_ranking_counts_rates(rng):
    rows = [dict(scope=s, kind=k, nominal_rate=r, top1_error=e)
            for s in mc.SCOPES for r in mc.RATES for k, e in (("impact", 10), ("grid", 11), ("uniform", 12))]
    lines = mc.ranking({"rows": rows})
    assert lines[-1] == f"network: impact <= grid <= uniform at {len(mc.RATES)} of {len(mc.RATES)} rates"


def test_ranking_at_equal_reduction_interpolates_between_rows():
    # grid reaches higher reductions at the same rate; at equal reduction it is compared between its rows
    rows = []
    for s in mc.SCOPES:
        rows += [dict(scope=s, kind="impact", mult_reduction=m, top1_error=e) for m, e in ((2, 10), (4, 14))]
        rows += [dict(scope=s, kind="grid", mult_reduction=m, top1_error=e) for m, e in ((2.5, 12), (5, 16))]
        rows += [dict(scope=s, kind="uniform", mult_reduction=m, top1_error=e) for m, e in ((2, 13), (4, 17))]
    lines = mc.ranking_at_equal_reduction({"rows": rows}, points=3)
    assert lines[0].startswith("conv2 2.50x fewer multiplications: impact 11.29%, grid 12.00%, uniform 14.29%")
    assert lines[-1] == "network: impact <= grid <= uniform at 3 of 3 equal reductions"
    # two grid rows of one reduction (a small map) are averaged: 11 and 13 read as 12
    dup = rows + [dict(scope=s, kind="grid", mult_reduction=2.5, top1_error=13) for s in mc.SCOPES]
    dup = [dict(r, top1_error=11) if r["kind"] == "grid" and r["mult_reduction"] == 2.5 and r["top1_error"] == 12
           else r for r in dup]
    assert mc.ranking_at_equal_reduction({"rows": dup}, points=3)[0] == lines[0]
    rows = [dict(r, top1_error=20) if r["kind"] == "grid" else r for r in rows]  # grid now worst
    assert mc.ranking_at_equal_reduction({"rows": rows}, points=3)[-1].endswith("at 0 of 3 equal reductions")
    only_two = [r for r in rows if r["kind"] != "grid"]
    assert mc.ranking_at_equal_reduction({"rows": only_two})[0].startswith("conv2: not ranked")


def run_dir_of(tmp_path):
    [run_dir] = (tmp_path / "runs").iterdir()  # one folder per weights file
    [settings] = run_dir.iterdir()  # and in it one per fine-tuning settings
    return settings


def test_nin_accuracy_end_to_end_and_resume(tmp_path, rng, capsys):
    make_batches(tmp_path / "cifar-10-batches-py", rng, n_train=24, n_test=6)
    weights = tmp_path / "w.npz"
    from perforated.train.sgd import save_weights

    save_weights(Model("nin", 1), weights)
    greedy = tmp_path / "greedy"
    greedy.mkdir()
    (greedy / "plan_2x.json").write_text(json.dumps(dict(
        PerforationPlan.from_masks("nin", layer_masks("nin", "uniform", 0.5, ["conv2"])).to_dict(), speedup=2.1)))
    argv = ["--weights", str(weights), "--data", str(tmp_path), "--targets", "2", "--finetune-subset", "4",
            "--kinds", "grid", "--rounds", "1", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
            "--greedy", str(greedy)]
    na.main(argv)
    raw = json.loads((tmp_path / "out" / "nin_accuracy.json").read_text())
    assert [r["kind"] for r in raw["rows"]] == ["grid", "greedy uniform"] and raw["test_images"] == 6
    for r in raw["rows"]:
        assert r["speedup"] > 0 and r["mult_reduction"] > 1.1 and r["mem_reduction"] > 1
        assert r["error_increase"] == pytest.approx(r["error"] - raw["dense_error"])
        assert r["tuned_error_increase"] == pytest.approx(r["tuned_error"] - raw["dense_error"])
        assert r["tuned_error_increase_vs_tuned_dense"] == pytest.approx(r["tuned_error"] - raw["dense_tuned_error"])
    assert (run_dir_of(tmp_path) / "dense" / "checkpoint.npz").is_file()  # the control was fine-tuned too
    assert raw["rows"][0]["rates"]["conv3"] > 0 and raw["rows"][1]["rates"] == {"conv1": 0.0, "conv2": 0.5, "conv3": 0.0}
    assert {p.name for p in (tmp_path / "out" / "plans").iterdir()} == {"nin_grid_2x.json", "nin_greedy_2x.json"}
    # a second run reuses the finished rows (no fine-tuning again: the run folders are untouched)
    run_dir = run_dir_of(tmp_path)
    stamp = (run_dir / "grid_2x" / "checkpoint.npz").stat().st_mtime_ns
    grid_plan = tmp_path / "out" / "plans" / "nin_grid_2x.json"
    kept = json.loads(grid_plan.read_text())
    grid_plan.write_text(json.dumps(PerforationPlan.uniform_rate("nin", 0.3).to_dict()))  # e.g. a stale tracked file
    na.main(argv)
    assert (run_dir / "grid_2x" / "checkpoint.npz").stat().st_mtime_ns == stamp
    assert json.loads(grid_plan.read_text()) == kept  # the finished row's masks, timed with its errors
    assert "SHA-256" in (tmp_path / "out" / "nin_accuracy.md").read_text()
    with pytest.raises(ValueError, match="measured on 6 test images, this run asks for 3"):
        na.main(argv + ["--test-images", "3"])
    header, rows = na.table(raw)
    assert len(rows) == 2 and "tuned error+" in header
    assert report._dense_error("nin", raw) == f"{raw['dense_error']:.2f}%"
    assert report._dense_error("vgg16", raw) == report.NOT_MEASURED
    # the search re-picked (other masks): a new greedy row and run; the old row leaves the table
    (greedy / "plan_2x.json").write_text(json.dumps(dict(
        PerforationPlan.from_masks("nin", layer_masks("nin", "uniform", 0.5, ["conv1"])).to_dict(), speedup=2.0)))
    na.main(argv)
    again = json.loads((tmp_path / "out" / "nin_accuracy.json").read_text())
    assert len(again["rows"]) == 2 and again["rows"][1]["rates"] == {"conv1": 0.5, "conv2": 0.0, "conv3": 0.0}
    assert len([d for d in run_dir.iterdir() if d.name.startswith("greedy_2x_")]) == 2
    # finished rows written to another --out take their masks along (the last --out counts)
    na.main(argv + ["--out", str(tmp_path / "out2")])
    moved = json.loads((tmp_path / "out2" / "nin_accuracy.json").read_text())
    assert [Path(r["plan"]).parent for r in moved["rows"]] == [tmp_path / "out2" / "plans"] * 2
    assert all(Path(r["plan"]).is_file() for r in moved["rows"])
    assert (run_dir / "grid_2x" / "checkpoint.npz").stat().st_mtime_ns == stamp  # still no fine-tuning
    # --no-control: the perforated rows only; the control column says so
    na.main(argv + ["--out", str(tmp_path / "out3"), "--runs", str(tmp_path / "runs3"), "--no-control"])
    alone = json.loads((tmp_path / "out3" / "nin_accuracy.json").read_text())
    assert alone["dense_tuned_error"] is None and "not measured" in na.table(alone)[1][0][-2]
    assert list((tmp_path / "runs3").glob("*/*/grid_2x")) and not list((tmp_path / "runs3").glob("*/*/dense"))
    # other fine-tuning settings start afresh in their own folder: here with batch normalisation
    na.main(argv + ["--finetune-batchnorm"])
    bn = json.loads((tmp_path / "out" / "nin_accuracy.json").read_text())
    assert all(r["finetune"]["batchnorm"] for r in bn["rows"]) and not raw["rows"][0]["finetune"]["batchnorm"]
    assert sorted(p.name for p in run_dir.parent.iterdir()) == [run_dir.name, run_dir.name + "_bn"]
    assert "batch norm" in na.table(bn)[1][0][-1]
    # ... and by distillation from the original network
    na.main(argv + ["--finetune-distill", "--no-control"])
    kd = json.loads((tmp_path / "out" / "nin_accuracy.json").read_text())
    assert all(r["finetune"]["distilled"] for r in kd["rows"])
    assert (run_dir.parent / (run_dir.name + "_kd0.5_T4") / "grid_2x" / "checkpoint.npz").is_file()
    assert json.loads((run_dir.parent / (run_dir.name + "_kd0.5_T4") / "grid_2x" / "config.json").read_text())["teacher"] \
        == str(weights)
    assert "distilled from the original" in na.table(kd)[1][0][-1]


def test_tables_report_only_adds_the_nin_accuracy_section(tmp_path):
    """`bench.tables --report-only` re-renders the committed measurements with nin_accuracy.json."""
    import shutil
    from pathlib import Path

    from bench import tables

    committed = Path(__file__).resolve().parent / "data" / "tables_snapshot.json"  # frozen, not results/
    shutil.copy(committed, tmp_path / "tables.json")
    meta = dict(json.loads(committed.read_text())["metadata"], rounds=1, weights="w.npz")
    row = dict(kind="impact", target=2.0, rate=0.5, speedup=1.8, mult_reduction=2.0, mem_reduction=1.9,
               error=20.0, error_increase=5.0, tuned_error=16.0, tuned_error_increase=1.0,
               finetune=dict(epochs=1, images_per_epoch=50000, lr=0.005))
    (tmp_path / "nin_accuracy.json").write_text(json.dumps(
        {"metadata": meta, "dense_error": 15.0, "test_images": 10000, "rows": [row], "note": "n"}))
    masks = [dict(scope="conv2", kind=k, nominal_rate=0.5, top1_error=e) for k, e in (("impact", 1), ("grid", 2), ("uniform", 3))]
    (tmp_path / "mask_comparison.json").write_text(json.dumps({"rows": masks}))
    tables.main(["--report-only", "--out", str(tmp_path)])
    text = (tmp_path / "tables.md").read_text()
    assert "| impact | 2x | 0.500 | 1.80 |" in text and "15.00%" in text
    assert "- conv2: impact <= grid <= uniform at 1 of 1 rates" in text
    assert f"From {tmp_path / 'nin_accuracy.json'} (" in text  # the file read, not results/ (outside the cwd)
    with pytest.raises(SystemExit):
        tables.main(["--report-only", "--out", str(tmp_path / "empty")])


def test_lowrank_tables_nin_rows_carry_the_error(tmp_path):
    """With an evaluator (trained NIN weights), every low-rank / perforation row gets its error increase."""
    from bench import lowrank_tables as lt
    from perforated.search import lowrank as LR

    calls = []

    def evaluate(model):
        calls.append(model.multiply_adds())
        return 10.0 + len(calls)

    net = lt.run_network("nin", 2, 1, LR.network_weights("nin", seed=0), evaluate)
    assert net["dense_error"] == 11.0 and len(net["rows"]) == 5 * len(lt.TARGETS["nin"])
    assert [r["error_increase"] for r in net["rows"]] == [float(i) for i in range(1, len(net["rows"]) + 1)]
    meta = dict(command="c", date="d", cpu="x", logical_cpus=2, platform="p", perforated_build="b", repeat=1,
                weights="w", nin_weights="n")
    text = lt.write({"metadata": meta, "networks": [net]}, tmp_path, "_t")
    assert "| +1.00 | not measured |" in text and "median of 1 runs after a warm-up" in text  # an older run
    for r in net["rows"]:  # each plan timed beside the dense network
        assert r["measured_speedup"] == pytest.approx(r["dense_time_beside"]["median"] / r["time"]["median"])
    text = lt.write({"metadata": dict(meta, timing="alternating"), "networks": [net]}, tmp_path, "_t")
    assert "each plan timed in 1 alternating rounds with the dense network" in text


def test_lowrank_equal_loss_names_the_fastest_method_within_each_threshold():
    from bench import lowrank_nin

    def row(method, speedup, err, tuned):
        return {"method": method, "measured_speedup": speedup, "error_increase": err, "tuned_error_increase": tuned}

    net = {"rows": [row("perforation", 2.1, 1.9, 0.9), row("low-rank (channel)", 1.5, 3.0, 1.5),
                    row("perforation + low-rank (channel)", 1.8, 0.4, 0.2),
                    row("perforation", 2.8, 3.0, 1.8), row("perforation + low-rank (channel)", 2.9, 1.2, 0.8)]}
    one, two = lowrank_nin.equal_loss(net)
    assert one.startswith("error+ after fine-tuning <= +1.0 points: perforation 2.10x, low-rank (channel) none, "
                          "perforation + low-rank (channel) 2.90x; a combined plan is fastest")
    assert "perforation 2.80x, low-rank (channel) 1.50x" in two
    net["rows"][-1]["measured_speedup"] = 2.0
    assert "not shown: the fastest is perforation" in lowrank_nin.equal_loss(net)[0]
    del net["rows"][0]["tuned_error_increase"]  # before fine-tuning when a row lacks the tuned error
    assert lowrank_nin.equal_loss(net)[0].startswith("error+ before fine-tuning <= +1.0 points: perforation none")
    assert lowrank_nin.row_key({"method": "perforation + low-rank (channel)", "target": 2.0}) == \
        "perforation_low_rank_channel_2x"


def test_lowrank_speed_only_times_stored_plans_and_keeps_their_accuracy(tmp_path):
    from bench import lowrank_tables as lt
    from perforated.search import lowrank as LR

    weights = LR.network_weights("nin", seed=0)
    first = lt.run_network("nin", 2, 1, weights, lambda model: 30.0)
    for i, r in enumerate(first["rows"]):
        r.update(tuned_error=31.0 + i, tuned_error_increase=1.0 + i)
    first.update(dense_tuned_error=29.5, finetune={"epochs": 1, "lr": 0.005, "subset": 100})
    again = lt.run_network("nin", 2, 1, weights, stored=first)
    assert [r["plan"] for r in again["rows"]] == [r["plan"] for r in first["rows"]]
    assert [r["tuned_error_increase"] for r in again["rows"]] == [1.0 + i for i in range(len(first["rows"]))]
    assert again["dense_error"] == 30.0 and again["dense_tuned_error"] == 29.5
    assert all(r["time"] is not s["time"] for r, s in zip(again["rows"], first["rows"]))


def test_nin_accuracy_fine_tuning_holds_out_the_validation_split(tmp_path, rng):
    from perforated.train.sgd import load_checkpoint, save_weights

    make_batches(tmp_path / "cifar-10-batches-py", rng, n_train=24, n_test=6)
    weights = tmp_path / "w.npz"
    save_weights(Model("nin", 1), weights)
    tuned = na.finetune(None, weights, tmp_path / "ft", 1, 0.001, None, str(tmp_path), None, val=8)
    assert tuned["images_per_epoch"] == 16 and tuned["validation_images_held_out"] == 8
    state = load_checkpoint(tmp_path / "ft" / "checkpoint.npz")
    assert state["config"]["val"] == 8 and state["history"][-1]["val_images"] == 8
