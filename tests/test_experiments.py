"""`minirattn reproduce`: the grids, the runner (skip, resume, side by side), the statistics, the
paper scale's networks and recipe, errors before training. Runs are tiny (overrides)."""
import json
import math
import os
import tarfile

import numpy as np
import pytest

from minirattn import experiments as E
from minirattn.cli import main
from minirattn.data import write_cifar_archive
from minirattn.models import build
from minirattn.training import StepSchedule, train

from helpers import TINY_NET

#: Runs of seconds: the narrow network on 64 generated images, 4 iterations.
TINY = dict(dataset="shapes", n_train=64, n_test=32, batch_size=8, iterations=4, eval_every=2,
            log_every=2, model_kwargs=TINY_NET)


def test_grids_expand_as_declared():
    p = E.plan("table3", "small", seeds=2, out="res")
    assert len(p.runs) == 16
    labels = [(v.label, s) for v, s, _ in p.runs]
    assert labels[:3] == [("arl-56", 0), ("arl-56", 1), ("arl-92", 0)]
    assert p.runs[-1][0].settings == dict(arch="attention164", learning="nal")
    assert p.runs[0][2] == os.path.join("res", "table3-small", "arl-56-seed0")
    assert p.results_path == os.path.join("res", "table3-small.json")
    t5 = E.plan("table5", seeds=1)
    assert {v.settings["label_noise"] for v, _, _ in t5.runs} == {0.1, 0.3, 0.5, 0.7}
    assert [o.better for o in E.TABLES["table5"].orderings] == [
        "attention92-10", "attention92-30", "attention92-50", "attention92-70"]
    for name, table in E.TABLES.items():          # every label the paper has is a variant
        assert set(E.PAPER[name]) <= {v.label for v in table.variants}


def test_every_small_run_shares_one_setting_and_differs_only_as_declared():
    """The small scale is one choice for all tables: every run's settings are the scale's plus
    its variant's."""
    for name, table in E.TABLES.items():
        for variant, seed, folder in E.plan(name, seeds=1).runs:
            c = E.run_config(table, variant, "small", seed, folder)
            for key, value in E.SCALES["small"].items():
                assert getattr(c, key) == value
            for key, value in variant.settings.items():
                assert getattr(c, key) == value


@pytest.mark.parametrize("table", sorted(E.TABLES))
def test_paper_scale_is_exactly_the_papers_networks_and_recipe(table):
    for variant, seed, folder in E.plan(table, "paper", seeds=1).runs:
        c = E.run_config(E.TABLES[table], variant, "paper", seed, folder)
        assert (c.dataset, c.iterations, c.batch_size, c.lr, c.momentum, c.weight_decay,
                c.augment, c.model_kwargs, c.dtype) == ("cifar10", 160_000, 64, 0.1, 0.9, 1e-4,
                                                        True, {}, "float32")
        assert StepSchedule(c.lr, c.iterations).milestones == (64_000, 96_000)
        net = build(c.arch, mask_activation=c.mask_activation, learning=c.learning, mask=c.mask)
        registry = build(c.arch)
        if c.mask == "soft":                            # the registry's network, parameter for
            assert net.num_parameters() == registry.num_parameters()      # parameter
    if table == "table5":
        a92, r164 = build("attention92").num_parameters(), build("resnet164").num_parameters()
        assert abs(a92 - r164) / r164 < 0.2             # "similar parameter counts"


def test_bad_names_and_options_fail_before_any_training(tmp_path):
    with pytest.raises(ValueError, match="unknown table 'table2'"):
        E.reproduce("table2", out=str(tmp_path))
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        E.reproduce("table1", "huge", out=str(tmp_path))
    with pytest.raises(ValueError, match="seeds"):
        E.reproduce("table1", seeds=0, out=str(tmp_path))
    with pytest.raises(ValueError, match="jobs"):
        E.reproduce("table1", jobs=0, out=str(tmp_path))
    with pytest.raises(ValueError, match="iterations"):
        E.reproduce("table1", out=str(tmp_path), overrides=dict(TINY, iterations=0))
    assert not os.listdir(tmp_path)                     # nothing was made
    with pytest.raises(SystemExit) as exit_:              # argparse: usage and status 2
        main(["reproduce", "table9"])
    assert exit_.value.code == 2
    assert main(["reproduce", "table1", "--seeds", "0"]) == 2


def test_paired_difference_matches_hand_computed_values():
    r = E.paired_difference(worse=[6.0, 7.0, 8.0], better=[5.0, 5.0, 7.0])
    # d = 1, 2, 1: mean 4/3, sd sqrt(1/3); t(0.975, 2) = 4.302653
    half = 4.302653 * math.sqrt(1 / 3) / math.sqrt(3)
    assert r["n"] == 3 and r["mean"] == pytest.approx(4 / 3)
    assert r["sd"] == pytest.approx(math.sqrt(1 / 3))
    assert (r["low"], r["high"]) == (pytest.approx(4 / 3 - half, abs=1e-6),
                                     pytest.approx(4 / 3 + half, abs=1e-6))
    assert r["holds"] and not r["sure"]                 # the interval [-0.10, 2.77] includes 0
    sure = E.paired_difference(worse=[6.0, 7.0, 8.0], better=[5.0, 6.1, 6.9])
    assert sure["holds"] and sure["sure"]               # d = 1, 0.9, 1.1
    one = E.paired_difference(worse=[6.0], better=[7.0])
    assert not one["holds"] and not one["sure"] and math.isnan(one["low"])
    assert E.mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)


def test_a_table_runs_skips_finished_runs_and_aggregates(tmp_path, capsys):
    out = str(tmp_path / "res")
    results = E.reproduce("table4", seeds=2, out=out, overrides=TINY, progress=False)
    assert len(results["runs"]) == 4
    v = results["summary"]["variants"]
    assert v["soft"]["n"] == 2 and v["soft"]["paper"] == 5.52 and v["local"]["paper"] == 6.48
    errors = [100 * r["final_error"] for r in results["runs"] if r["label"] == "soft"]
    assert v["soft"]["mean"] == pytest.approx(np.mean(errors))
    (o,) = results["summary"]["orderings"]
    assert o["seeds"] == [0, 1] and o["claim"] == "soft has a lower test error than local"
    saved = json.load(open(os.path.join(out, "table4-small.json")))
    assert saved["summary"] == json.loads(json.dumps(results["summary"]))
    r0 = saved["runs"][0]
    assert r0["config"]["arch"] == "attention56" and r0["commit"] and r0["machine"]["cpus"]
    assert r0["curve"][-1][0] == 4 and r0["version"]
    assert os.path.getsize(os.path.join(out, "table4-small.png")) > 1000
    printed = capsys.readouterr().out
    assert "soft" in printed and "5.52" in printed and "interval" in printed

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")
    E_execute, E.execute = E.execute, refuse
    try:
        again = E.reproduce("table4", seeds=2, out=out, overrides=TINY, progress=False)
    finally:
        E.execute = E_execute
    assert "4 already finished, 0 to run" in capsys.readouterr().out
    assert again["summary"] == results["summary"]


def test_an_interrupted_run_resumes_to_the_result_of_an_uninterrupted_one(tmp_path):
    whole = E.reproduce("table1", seeds=1, out=str(tmp_path / "a"), overrides=TINY,
                        progress=False)
    # the same table elsewhere, its first run stopped after its first checkpoint (iteration 2)
    p = E.plan("table1", seeds=1, out=str(tmp_path / "b"))
    variant, seed, folder = p.runs[0]
    config = E.run_config(p.table, variant, "small", seed, folder, overrides=TINY)
    calls = []

    def stop_at_three(model, optimizer, x, y, lr, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        from minirattn.training import train_step
        return train_step(model, optimizer, x, y, lr, **kw)
    with pytest.raises(KeyboardInterrupt):
        train(config, step=stop_at_three, echo=lambda *a: None)
    assert E.read_result(os.path.join(folder, "result.json")) is None
    resumed = E.reproduce("table1", seeds=1, out=str(tmp_path / "b"), overrides=TINY,
                          progress=False)
    first = [r for r in resumed["runs"] if r["label"] == variant.label][0]
    assert first["config"]["resumes"][0]["iteration"] == 2
    for a, b in zip(whole["runs"], resumed["runs"]):
        assert (a["label"], a["final_error"], a["curve"]) == (b["label"], b["final_error"],
                                                            b["curve"])


def test_runs_side_by_side_give_every_result(tmp_path):
    results = E.reproduce("table4", seeds=1, jobs=2, out=str(tmp_path), overrides=TINY,
                          progress=False)
    assert sorted(r["label"] for r in results["runs"]) == ["local", "soft"]
    for v, s, folder in E.plan("table4", seeds=1, out=str(tmp_path)).runs:
        assert os.path.exists(os.path.join(folder, "log.txt"))


def test_fig4_records_each_stages_response_over_training(tmp_path):
    results = E.reproduce("fig4", seeds=1, out=str(tmp_path), overrides=TINY, progress=False)
    run = results["runs"][0]
    assert [it for it, _ in run["response"]] == [2, 4]
    assert len(run["response"][0][1]) == 3 and all(v > 0 for v in run["response"][0][1])
    kinds = [o["kind"] for o in results["summary"]["orderings"]]
    assert kinds == ["response", "error"]
    assert os.path.getsize(str(tmp_path / "fig4-small.png")) > 1000


def test_paper_scale_runs_on_a_cifar_format_archive(tmp_path):
    arc = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_archive(str(arc), "cifar10", n_train_per_batch=4, n_test=8)
    with tarfile.open(arc) as t:
        t.extractall(tmp_path, filter="data")
    tiny = dict(iterations=2, eval_every=2, batch_size=8, model_kwargs=TINY_NET)
    results = E.reproduce("table4", "paper", seeds=1, out=str(tmp_path / "res"),
                          data_dir=str(tmp_path), overrides=tiny, progress=False)
    assert results["runs"][0]["config"]["dataset"] == "cifar10"
    assert results["overrides"] == tiny


def test_the_command_reproduces_a_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(E, "SCALES", dict(E.SCALES, small=dict(E.SCALES["small"], **TINY)))
    assert main(["reproduce", "table4", "--seeds", "1", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Table 4" in out and "results:" in out


def test_the_recorded_command_is_what_a_user_types():
    from minirattn.experiments import _command_line
    assert _command_line(["/home/u/venv/lib/minirattn/__main__.py", "reproduce", "table5"]) == \
        "minirattn reproduce table5"
    assert _command_line(["/usr/local/bin/minirattn", "reproduce", "fig4"]) == "minirattn reproduce fig4"
    assert _command_line(["script.py", "x"]) == "script.py x"
