"""Greedy perforation (SPEC §6): rates, costs, checkpoints and resume (deterministic timer)."""
import json

import numpy as np
import pytest

from perforated.files import write_json_atomic
from perforated.search.greedy import RATES, GreedySearch
from perforated.graph.model import Model


def test_rates_follow_spec():
    assert len(RATES) == 21 and RATES[:3] == (0.0, 1 / 3, 0.5) and RATES[-1] == pytest.approx(1 - 1 / 20)


@pytest.fixture
def setup(rng, tmp_path):
    weights = Model("nin", 1, seed=3).params
    x = rng.standard_normal((6, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 6)
    return weights, x, y, tmp_path


def search(setup, folder, kinds=("uniform",)):
    weights, x, y, tmp = setup
    return GreedySearch("nin", weights, x, y, tmp / folder, kinds=kinds, impact_x=x[:4], impact_y=y[:4],
                        eval_batch=6, timer="macs", seed=5, log=lambda m: None)


def test_steps_commit_cheapest_and_save(setup):
    s = search(setup, "a", kinds=("uniform", "grid"))
    s.run(2)
    assert s.step == 2 and sum(s.level.values()) == 2
    for i in range(1, 3):
        record = json.loads((s.out / f"step_{i:03d}.json").read_text())
        assert record["t0_beside"] / record["time"] == pytest.approx(record["speedup"])
        assert record["layer"] in ("conv1", "conv2", "conv3")
    state = json.loads((s.out / "state.json").read_text())
    assert state["step"] == 2 and set(state["plan"]["layers"]) == set(s.masks)


def commit(s, layer, kind, level):
    s.level[layer] = level
    s.masks[layer] = s._mask(layer, kind, RATES[level])


def test_a_notch_always_computes_fewer_positions(setup):
    # conv3 is 8x8: rates 1 - 1/k for k = 13..16 all keep floor(64/k) = 4 positions and k = 17..20
    # keep 3, so from level 13 the next notch is level 17, and from 17 there is none left
    s = search(setup, "notch")
    commit(s, "conv3", "uniform", 13)
    assert s.next_level("conv3") == 17
    commit(s, "conv3", "uniform", 17)
    assert s.next_level("conv3") is None
    del s.masks["conv3"]
    s.level["conv3"] = 0
    s.run(3)
    for i in range(1, 4):
        record = json.loads((s.out / f"step_{i:03d}.json").read_text())
        assert record["rate"] == RATES[record["level"][record["layer"]]]


def test_a_grid_notch_counts_the_grid(setup):
    # an 8x8 grid keeps 16 positions at levels 3 and 4 and 9 at level 5: from a grid at level 3 the
    # grid's next notch is 5; a uniform mask at level 4 keeps 16 too (floor(64/4)), so its notch is 5
    # as well, and from a 9-position grid at level 5 uniform must skip levels 6-7 (keeping 10 and 9)
    s = search(setup, "grid_notch", kinds=("grid", "uniform"))
    commit(s, "conv3", "grid", 3)
    assert s.masks["conv3"].count == 16
    assert s.next_level("conv3", "grid") == 5 and s.next_level("conv3", "uniform") == 5
    commit(s, "conv3", "grid", 5)
    assert s.masks["conv3"].count == 9 and s.next_level("conv3", "uniform") == 8
    for cand in s.candidates():
        assert cand["masks"][cand["layer"]].count < (s.masks[cand["layer"]].count if cand["layer"] in s.masks
                                                     else np.prod(s.sizes[cand["layer"]]))


def test_resume_gives_the_same_search(setup):
    whole = search(setup, "whole")
    whole.run(2)
    part = search(setup, "part")
    part.run(1)
    resumed = search(setup, "part")  # a new process would do exactly this
    assert resumed.step == 1
    resumed.run(2)
    assert resumed.level == whole.level
    for name in whole.masks:
        np.testing.assert_array_equal(resumed.masks[name].indices, whole.masks[name].indices)
    assert resumed.plan_dict() == whole.plan_dict()  # generator names survive the resume too


def test_impact_masks_nest_even_where_impact_is_zero(setup):
    # computed positions of impact 0 (no image activates them) tie with the perforated ones (0 by
    # definition); the next mask must still choose among the computed positions only
    s = search(setup, "zeros", kinds=("impact",))
    first = s._mask("conv2", "impact", RATES[2])
    s.masks["conv2"] = first
    s.impact["conv2"] = np.zeros_like(s.impact["conv2"])
    second = s._mask("conv2", "impact", RATES[3])
    assert second.count < first.count and set(second.indices) <= set(first.indices)


def test_impact_kind_keeps_masks_nested(setup):
    """Each step thins one layer's impact mask; its computed positions are a subset of the ones it had."""
    s = search(setup, "impact", kinds=("impact",))
    before, thinned_again = {}, 0
    for steps in range(1, 5):
        s.run(steps)  # runs up to step `steps`
        assert s.step == steps
        changed = [name for name, m in s.masks.items()
                   if name not in before or not np.array_equal(before[name], m.indices)]
        assert len(changed) == 1  # one layer per step
        name = changed[0]
        now = set(s.masks[name].indices.tolist())
        if name in before:
            assert now < set(before[name].tolist())
            thinned_again += 1
        before = {k: m.indices.copy() for k, m in s.masks.items()}
    assert thinned_again >= 1  # 4 steps over NIN's 3 perforable convs: one was thinned twice


def test_pick_writes_plans(setup):
    s = search(setup, "pick")
    s.run(1)
    picked = s.pick((1.01,))
    plan = json.loads(picked[1.01].read_text())
    m = Model("nin", 2, masks=None)
    from perforated.graph.plan import PerforationPlan

    loaded = PerforationPlan("nin", plan["layers"])
    assert Model("nin", 2, plan=loaded).multiply_adds() < m.multiply_adds()


def test_bad_arguments(setup):
    weights, x, y, tmp = setup
    with pytest.raises(ValueError, match="timer must be"):
        GreedySearch("nin", weights, x, y, tmp / "t", timer="wallclock")
    with pytest.raises(ValueError, match="needs impact_x"):
        GreedySearch("nin", weights, x, y, tmp / "t", kinds=("impact",))


def test_until_stops_at_the_speedup_and_pooling_kind_works(setup):
    s = search(setup, "until", kinds=("pooling",))  # conv3 precedes a global pooling: one window
    s.run(50, until=1.3)
    assert 1.3 <= s.speedup() and s.step < 50
    before = s.step
    s.run(50, until=1.3)  # already there: nothing more to do
    assert s.step == before


def test_write_report(setup):
    from perforated.search.greedy import write_report

    s = search(setup, "report")
    s.run(2)
    s.pick((1.01,))
    path = s.out / "report.md"
    write_report(s.out, path, "cmd")
    text = path.read_text()
    assert "Command: `cmd`" in text and text.count("| uniform |") == 2 and "- 1.01x: step" in text
    with pytest.raises(ValueError, match="no step_"):
        write_report(s.out / "nothing", path)


def test_resume_refuses_a_folder_from_other_inputs(setup):
    weights, x, y, tmp = setup
    search(setup, "f").run(1)
    other = Model("nin", 1, seed=4).params
    with pytest.raises(ValueError, match="other weights, images"):
        GreedySearch("nin", other, x, y, tmp / "f", impact_x=x[:4], impact_y=y[:4], eval_batch=6,
                     timer="macs", seed=5, log=lambda m: None)
    with pytest.raises(ValueError, match="other weights, images"):
        GreedySearch("nin", weights, x[::-1].copy(), y, tmp / "f", impact_x=x[:4], impact_y=y[:4],
                     eval_batch=6, timer="macs", seed=5, log=lambda m: None)
    assert search(setup, "f").step == 1  # the same inputs still resume


def test_retime_feeds_pick_and_report(setup):
    from perforated.search.greedy import write_report

    s = search(setup, "retime")
    s.run(3)
    steps = [json.loads((s.out / f"step_{i:03d}.json").read_text()) for i in (1, 2, 3)]
    record = s.retime(rounds=2, repeat=1)  # the macs timer: re-timing reproduces the search's speedups
    assert [r["step"] for r in record["steps"]] == [1, 2, 3]
    assert [r["speedup"] for r in record["steps"]] == pytest.approx([r["speedup"] for r in steps])
    # a drifting clock: the re-timed speedups, not the search's, decide the pick
    retimed = json.loads((s.out / "retimed.json").read_text())
    for entry, speedup in zip(retimed["steps"], (0.9, 1.0 + 1e-9, 0.95)):  # step 2 alone reaches 1x
        entry["speedup"] = speedup
    (s.out / "retimed.json").write_text(json.dumps(retimed))
    plan = json.loads(s.pick((1.0,))[1.0].read_text())
    assert plan["step"] == 2 and plan["speedup_from"].startswith("re-timed, median of 2")
    assert plan["search_speedup"] == pytest.approx(steps[1]["speedup"])
    # a target no step reaches removes the plan an earlier pick left
    (s.out / "plan_100x.json").write_text("{}")
    assert 100.0 not in s.pick((100.0,)) and not (s.out / "plan_100x.json").exists()
    path = s.out / "report.md"
    write_report(s.out, path)
    text = path.read_text()
    assert "re-timed speedup |" in text and "speedups: re-timed" in text
    # a step saved after the re-timing: pick and report fall back to the search's timings
    s.run(4)
    plan = json.loads(s.pick((1.0,))[1.0].read_text())
    assert plan["speedup_from"] == "the search's timer"
    write_report(s.out, path)
    assert "re-timed speedup" not in path.read_text()
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        s.retime(rounds=0)


def test_pick_takes_the_lowest_nll_among_the_steps_fast_enough(setup):
    s = search(setup, "lowest")
    s.run(3)
    paths = [s.out / f"step_{i:03d}.json" for i in (1, 2, 3)]
    records = [json.loads(p.read_text()) for p in paths]
    # every step fast enough; the NLL falls from step 2 to step 3, as re-estimated masks can make it
    for record, speedup, loss in zip(records, (1.5, 2.0, 2.1), (0.3, 0.5, 0.4)):
        record["speedup"], record["loss"] = speedup, loss
    for path, record in zip(paths, records):
        path.write_text(json.dumps(record))
    picked = {t: json.loads(p.read_text()) for t, p in s.pick((1.2, 1.8, 2.05)).items()}
    assert [picked[t]["step"] for t in (1.2, 1.8, 2.05)] == [1, 3, 3]
    assert picked[1.8]["nll"] == 0.4 and picked[1.8]["speedup"] == 2.1
    records[2]["loss"] = 0.5  # a tie: the earlier step, the one less perforated
    paths[2].write_text(json.dumps(records[2]))
    assert json.loads(s.pick((1.8,))[1.8].read_text())["step"] == 2


def test_retime_measures_forward_time(setup):
    weights, x, y, tmp = setup
    s = GreedySearch("nin", weights, x, y, tmp / "measured", eval_batch=6, timing_batch=1, repeat=1, seed=5,
                     timer="macs", log=lambda m: None)
    s.run(1)  # a step chosen by exact counts: measured at batch 1 (slower under a sanitizer) no candidate
    s.timer = "measured"  # may beat the original's time, and the search then stops without a step
    state = s.rng.bit_generator.state
    record = s.retime(rounds=2, repeat=1)
    assert record["t0"] > 0 and record["steps"][0]["time"] > 0 and record["timing_batch"] == 1
    assert s.rng.bit_generator.state == state  # re-timing leaves the search's draws alone


def test_run_retimed_goes_on_until_a_retimed_step_reaches_until(setup):
    class SlowerWhenRetimed(GreedySearch):  # re-timing reads 10% slower than the search's timer
        retimings = 0

        def retime(self, rounds=5, repeat=2):
            SlowerWhenRetimed.retimings += 1
            record = super().retime(rounds, repeat)
            for r in record["steps"]:
                r["speedup"] *= 0.9
            write_json_atomic(self.out / "retimed.json", record)  # as a machine that reads slower would
            return record

    weights, x, y, tmp = setup
    plain = search(setup, "plain")
    plain.run(50, until=1.3)
    s = SlowerWhenRetimed("nin", weights, x, y, tmp / "slower", impact_x=x[:4], impact_y=y[:4], eval_batch=6,
                          timer="macs", seed=5, log=lambda m: None)
    s.run_retimed(50, until=1.3, rounds=1)
    speedups = [json.loads((s.out / f"step_{i:03d}.json").read_text())["speedup"] * 0.9 for i in range(1, s.step + 1)]
    assert s.step > plain.step and max(speedups) >= 1.3 and max(speedups[:-1]) < 1.3
    before, retimings = s.step, SlowerWhenRetimed.retimings
    s.run_retimed(50, until=1.3, rounds=1)  # already there: not timed again (it could move the picks)
    assert s.step == before and SlowerWhenRetimed.retimings == retimings
    (s.out / "retimed.json").unlink()  # a re-timing that was lost is made again
    s.run_retimed(50, until=1.3, rounds=1)
    assert SlowerWhenRetimed.retimings == retimings + 1


def test_costs_ignore_a_drift_of_the_machine(setup):
    """A machine that gets 2% slower at every timing: the original is timed beside each candidate and
    the gain taken relative to it, so the search has the costs and commits the steps it has with exact
    (macs) times. With t0 timed once at the start, the drift would exceed the gains of the later steps
    (infinite costs, a layer picked by position)."""
    class Drifting(GreedySearch):
        calls = 0

        def times(self, variants, repeat=None, rng=None):
            Drifting.calls += 1
            macs = [Model("nin", 1, masks=v).multiply_adds() for v in variants]
            return [m * (1 + 0.02 * Drifting.calls) for m in macs]

    weights, x, y, tmp = setup
    exact = search(setup, "exact")
    exact.run(4)
    drifting = Drifting("nin", weights, x, y, tmp / "drifting", eval_batch=6, timer="measured", seed=5,
                        log=lambda m: None)
    drifting.run(4)
    assert Drifting.calls > 10
    assert drifting.level == exact.level and drifting.plan_dict() == exact.plan_dict()
    for i in range(1, 5):
        a, b = (json.loads((s.out / f"step_{i:03d}.json").read_text()) for s in (exact, drifting))
        # cost * t0 = (L - L0) / (1 - t / t0_beside): the same (t0 itself is one timing, 2% slow here)
        assert b["cost"] * b["t0"] == pytest.approx(a["cost"] * a["t0"]) and b["speedup"] == pytest.approx(a["speedup"])


def test_stops_when_no_candidate_is_faster(setup):
    """Every candidate timed no faster than the original (infinite costs): the search stops with a
    message instead of committing the first candidate in layer order."""
    class NoGain(GreedySearch):
        def times(self, variants, repeat=None, rng=None):
            return [1.0 for _ in variants]

    weights, x, y, tmp = setup
    said = []
    s = NoGain("nin", weights, x, y, tmp / "nogain", eval_batch=6, timer="measured", seed=5, log=said.append)
    s.run(3)
    assert s.step == 0 and not list(s.out.glob("step_*.json"))
    assert any("no candidate runs faster" in m for m in said)


def test_resume_notes_a_folder_from_before_the_notch_rule(setup):
    weights, x, y, tmp = setup
    s = search(setup, "old_notch")
    s.run(1)
    state = json.loads((s.out / "state.json").read_text())
    del state["notch"]  # as a folder written before the rule
    (s.out / "state.json").write_text(json.dumps(state))
    logged = []
    GreedySearch("nin", weights, x, y, s.out, impact_x=x[:4], impact_y=y[:4], eval_batch=6, timer="macs",
                 seed=5, log=logged.append)
    assert any("steps 1-1 of this folder raised a layer to the next rate" in m for m in logged)


def test_a_stopped_search_is_finished_for_run_retimed(setup):
    s = search(setup, "stopped")
    s.run(2)
    s.retime(rounds=1, repeat=1)
    s._stop("no candidate runs faster than the original network")
    resumed = search(setup, "stopped")
    assert resumed.stopped == "no candidate runs faster than the original network"

    def no_more(*args, **kwargs):
        raise AssertionError("a stopped search with a current re-timing was run or timed again")

    resumed.retime = resumed.run = no_more
    resumed.run_retimed(50, until=10.0)  # neither 50 steps nor 10x: finished only because it stopped


def test_command_takes_its_nll_images_from_the_validation_split(rng, tmp_path, monkeypatch):
    from cases import make_batches
    from perforated.search import greedy
    from perforated.data import held_out_split

    _, labels = make_batches(tmp_path / "cifar-10-batches-py", rng, n_train=10)
    Model("nin", 1, seed=3).save_weights(tmp_path / "w.npz")
    seen = {}

    class Recording(GreedySearch):
        def __init__(self, network, weights, x, y, out, **kw):
            seen.update(x=x, y=y, impact_y=kw["impact_y"])
            super().__init__(network, weights, x, y, out, **kw)

    monkeypatch.setattr(greedy, "GreedySearch", Recording)
    greedy.main(["--weights", str(tmp_path / "w.npz"), "--data", str(tmp_path / "cifar-10-batches-py"),
                 "--out", str(tmp_path / "g"), "--steps", "1", "--timer", "macs", "--val", "3",
                 "--impact-images", "4", "--eval-batch", "3"])
    kept, held = held_out_split(10, 3)
    np.testing.assert_array_equal(seen["y"], labels[held])  # the NLL images: the validation split
    assert seen["x"].shape == (3, 3, 32, 32) and len(seen["impact_y"]) == 4
    assert json.loads((tmp_path / "g" / "state.json").read_text())["step"] == 1
