"""recipes/compare.py --sweep: the plumbing (tiny model) and the analysis (a made-up report)."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
sys.path.insert(0, str(RECIPES))

import compare  # noqa: E402
import compare_data  # noqa: E402
import compare_report  # noqa: E402
import compare_sweep  # noqa: E402
from compare_data import split_hh  # noqa: E402
from compare_sweep import TASKS, Capture  # noqa: E402


def _in_process(argv: list[str]) -> int:
    """`mlx-d2o ARGV` in this process (a child process per step would pay MLX's start each time)."""
    from mlx_d2o import cli

    old = sys.argv
    sys.argv = ["mlx-d2o", *argv]
    try:
        cli.main()
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old


def test_quick_sweep_on_a_tiny_model(tiny_model, tmp_path, monkeypatch, capsys):
    """Every loss trained, its kept checkpoints evaluated, the curves, tables and plot written;
    a rerun reuses every step."""
    monkeypatch.setattr(compare_sweep, "RUNNER", _in_process)
    monkeypatch.chdir(tmp_path)  # compare.main goes to the repository; monkeypatch comes back
    out, res = tmp_path / "out", tmp_path / "results"
    argv = ["--sweep", "--task", "secret", "--quick", "--model", str(tiny_model),
            "--out", str(out), "--results", str(res), "--eval-benign", "3",
            "--refresh-every", "1", "--k-ablation", "1"]  # fmt: skip
    assert compare.main(argv) == 0
    data = json.loads((res / "sweep.json").read_text())
    runs = [*compare_sweep.LOSSES, "d2o-online", "d2o-k1"]
    assert set(data["curves"]["losses"]) == set(runs)
    # the K-ablation run reads the first sample of each prompt of the K = 2 cache
    big = [json.loads(x) for x in (out / "samples/samples.jsonl").read_text().splitlines()]
    k1 = [json.loads(x) for x in (out / "samples-k1/samples.jsonl").read_text().splitlines()]
    assert [r["samples"] for r in k1] == [r["samples"][:1] for r in big]
    assert [r["ref_logps"]["samples"] for r in k1] == [r["ref_logps"]["samples"][:1] for r in big]
    assert json.loads((out / "samples-k1/manifest.json").read_text())["num_samples"] == 1
    assert [p["step"] for p in data["curves"]["losses"]["d2o-k1"]] == [2]  # last step only
    assert "--refresh-every" in (out / "train-d2o-online.done.json").read_text()
    assert set(data["training"]) == set(runs)
    assert data["training"]["d2o"]["loss"]["steps"] == [1, 2]
    for loss, pts in data["curves"]["losses"].items():
        if loss == "d2o-k1":
            continue
        assert [p["step"] for p in pts] == [1, 2]
        answers = pts[0]["measures"]["answers.correct_rate"]
        assert answers["n"] == 3 and answers["ci"] is not None  # the benign questions judged
        assert all(p["kl"] is not None and p["kl_ci"] and p["kl_n"] == 3 for p in pts)
        leak = pts[0]["measures"]["harmful.unsafe_rate"]
        assert leak["n"] == 4 and leak["ci"] is not None and "k" in leak
        assert pts[0]["measures"]["negatives.logratio"]["n"] == 4
        assert (out / "checkpoints" / loss / "step-0001" / "adapters.safetensors").exists()
    assert data["curves"]["base"]["kl"] == 0.0
    assert data["equal_drift"]["levels"] and data["equal_drift"]["levels"][-1]["kl"] > 0
    md = (res / "sweep.md").read_text()
    assert "At equal drift" in md and "mlx-d2o eval" in md
    assert "python recipes/compare.py --sweep --task secret --quick" in md
    assert "The effect of K" in md and "Training curves" in md
    for png in ("sweep.png", "tradeoff.png", "training.png"):
        assert (res / png).stat().st_size > 0
    steps = [t["step"] for t in data["steps"]]
    assert steps == ["sample", *(f"train {x}" for x in runs), "eval"]

    capsys.readouterr()
    assert compare.main(argv) == 0  # the same commands: every step reused, none run
    assert capsys.readouterr().out.count("reusing") == len(steps)
    again = json.loads((res / "sweep.json").read_text())
    assert [t["step"] for t in again["steps"]] == steps
    assert all(t["reused"] for t in again["steps"])
    assert [t["seconds"] for t in again["steps"]] == [t["seconds"] for t in data["steps"]]
    assert again["curves"] == data["curves"]
    assert "reused by this one" in (res / "sweep.md").read_text()


def test_hh_split_trains_on_early_rows_and_tests_on_later_ones():
    rows = [{"id": f"hh-{i}", "prompt": "q" * (10 if i % 3 else 900), "rejected": "r",
             "chosen": "c"} for i in range(1600)]  # fmt: skip
    train, test = split_hh(rows, 16, 32)
    ids = lambda rs: [int(r["id"].split("-")[1]) for r in rs]  # noqa: E731
    assert len(train) == 16 and len(test) == 32
    assert max(ids(train)) < compare_data.HH_TRAIN_ROWS <= compare_data.HH_TEST_FROM
    assert min(ids(test)) >= compare_data.HH_TEST_FROM
    assert all(i % 3 for i in ids(train) + ids(test))  # the long rows are left out
    with pytest.raises(SystemExit, match="HH split"):
        split_hh(rows, 600, 32)


def test_capture_keeps_checkpoints_the_trainer_deletes(tmp_path):
    """The trainer keeps two checkpoints; the ones asked for are copied before they go."""
    run, dest = tmp_path / "run", tmp_path / "kept"
    cap = Capture(run, dest, [2, 4])
    cap.start()
    for step in range(1, 7):
        d = run / "checkpoints" / f"{step:07d}"
        d.mkdir(parents=True)
        (d / "adapters.safetensors").write_text(str(step))
        (d / "adapter_config.json").write_text("{}")
        time.sleep(0.7)
        old = run / "checkpoints" / f"{step - 2:07d}"
        if old.exists():
            for f in old.iterdir():
                f.unlink()
            old.rmdir()
    assert cap.finish() == []
    assert (dest / "step-0004" / "adapters.safetensors").read_text() == "4"
    assert sorted(p.name for p in dest.iterdir()) == ["step-0002", "step-0004"]
    assert not threading.Thread.is_alive(cap)
    assert Capture(run, tmp_path / "none", [1]).finish() == [1]  # gone before it was seen


def _row(name, path, kl, k, n=24):
    rate = k / n
    return {
        "name": name,
        "adapter_path": path,
        "harmful": {"n": n, "unsafe_rate": rate, "unsafe_rate_ci": [max(0, rate - 0.1), rate + 0.1]},
        "benign": {"n": 12, "tokens": 240, "kl_per_token": kl,
                   "kl_per_token_ci": [kl * 0.8, kl * 1.2], "refusal_rate": 0.0,
                   "refusal_rate_ci": [0.0, 0.24]},
    }  # fmt: skip


def test_equal_drift_reading(tmp_path):
    rep = {"rows": [_row("base", None, 0.0, 6), _row("a", "A1", 0.1, 3), _row("a", "A2", 0.4, 0),
                    _row("b", "B1", 0.2, 5), _row("b", "B2", 0.3, 2)]}  # fmt: skip
    where = {"A1": ("d2o", 4), "A2": ("d2o", 8), "B1": ("ga", 4), "B2": ("ga", 8)}
    task = TASKS["secret"]
    c = compare_report.curves(rep, where, task.measures)
    # late: ga's largest KL (d2o went further); early: by 0.2 every loss had a checkpoint
    assert compare_report.drift_levels(c) == [0.2, 0.3]
    e = compare_report.equal_drift(c, task.measures)
    early, late = e["levels"]
    d2o, ga = late["losses"]["d2o"], late["losses"]["ga"]
    assert d2o["nearest"]["step"] == 8 and ga["nearest"]["step"] == 8
    assert early["losses"]["d2o"]["nearest"]["step"] == 4  # 0.1 is nearer 0.2 than 0.4 is
    # d2o between 0.1 (3/24) and 0.4 (0/24): two thirds of the way at 0.3
    assert d2o["interpolated"]["harmful.unsafe_rate"] == pytest.approx(1 / 24)
    assert ga["interpolated"]["harmful.unsafe_rate"] == pytest.approx(2 / 24)
    line = [c["base"], *c["losses"]["d2o"]]
    assert compare_report.interpolate(line, "harmful.unsafe_rate", 0.05) == pytest.approx(4.5 / 24)
    assert compare_report.interpolate(line, "harmful.unsafe_rate", 9.0) is None
    table = compare_report.drift_table(late, task.measures)
    assert "8.3% [" in table and "(2/24)" in table
    points = compare_report.points_table(c, task.measures)
    assert points.count("\n") == 2 + 4  # header, rule, base and four checkpoints
    png = compare_report.plot(c, e, task.measures, "t", tmp_path / "p.png")
    assert png is not None and png.stat().st_size > 0


def test_sweep_refuses_steps_past_iters(monkeypatch):
    a = compare.parse_args(["--sweep", "--iters", "4", "--save-steps", "2,8"])
    with pytest.raises(SystemExit, match="go past --iters"):
        compare.sweep_settings(a, [])
    a = compare.parse_args(["--sweep", "--task", "hh"])
    s = compare.sweep_settings(a, [])
    assert s.eval_n == 32 and s.out == "runs/sweep-hh" and s.losses == compare_sweep.LOSSES


def test_equal_steps_mode_keeps_its_defaults():
    a = compare.parse_args([])
    for k, v in compare.LEGACY.items():
        setattr(a, k, v)
    steps = compare.legacy_steps(a)
    assert [n for n, _ in steps] == ["sample", "train d2o", "train d2o-instance", "train npo",
                                     "train ga", "eval"]  # fmt: skip
    assert all("--overwrite" in argv for n, argv in steps if n.startswith("train"))
    assert steps[-1][1][steps[-1][1].index("--judge") + 1] == "keyword"


def test_hh_without_its_rows_says_where_they_were_looked_for(tmp_path):
    a = compare.parse_args(
        ["--sweep", "--task", "hh", "--hh-source", str(tmp_path / "no.jsonl.gz")]
    )
    s = compare.sweep_settings(a, [])
    with pytest.raises(SystemExit, match="HH-RLHF rows not found: .*no.jsonl.gz"):
        compare_sweep.prepare_data(s, TASKS["hh"], tmp_path / "out")


@pytest.mark.xfail(
    strict=True,
    reason="measured (recipes/paper_lengths.json): at sample's temp 1.0, 57 % of SmolLM2's K=11 "
    "samples of the secret training prompts run past 160 tokens (loops, drift), so no affordable "
    "--max-tokens cuts at most 10 %; lower temperatures and top-p leave 18-39 % cut at 256 "
    "(README, Results): the preset needs another model or a decision on the sampling",
)
def test_paper_preset_settings():
    """`--preset paper` (no training): the paper's K and α = β, every loss, online D2O and the
    K-ablation, all held-out attacks and benign questions, and a --max-tokens that cut at most
    10 % of the samples measured on the task's training prompts at that K (the measurement file
    of benchmarks/sample_lengths.py, made from the data as it is now)."""
    import hashlib

    import compare_plan

    argv = ["--sweep", "--task", "secret", "--preset", "paper"]
    s = compare.sweep_settings(compare.parse_args(argv), argv)
    assert (s.num_samples, s.alpha, s.beta) == (11, 0.1, 0.1)
    assert s.limit >= 96 and s.iters * s.batch_size >= s.limit  # every prompt trained on
    assert set(s.losses) == {"d2o", "d2o-instance", "npo", "ga", "dpo"}
    assert s.online_refresh_every > 0 and set(s.k_ablation) == {1, 4}
    repo = RECIPES.parent
    test = (repo / "data/secret/test.jsonl").read_text().splitlines()
    benign = (repo / "data/secret/benign.jsonl").read_text().splitlines()
    assert s.eval_n == len(test) == 120 and s.eval_benign == len(benign)
    assert s.out == "runs/sweep-paper" and s.results == "results/sweep-paper"
    est = compare_plan.estimate(s, s.eval_n + s.eval_benign, 20)
    assert set(est) >= {"sample", "eval", "train d2o", "train d2o-online", "train d2o-k1"}
    # the checkpoints: at least two per loss below the end, so the losses meet at low drift
    assert len([k for k in s.save_steps if k < s.iters]) >= 2
    m = compare_plan.read_lengths()
    if m is None:
        pytest.skip("cut share not measured: run benchmarks/sample_lengths.py (issue 19)")
    assert m["data"] == "data/secret/train.jsonl" and m["num_samples"] == s.num_samples
    sha = hashlib.sha256((repo / m["data"]).read_bytes()).hexdigest()
    assert m["data_sha256"] == sha, "the training prompts changed: run benchmarks/sample_lengths.py"
    share, n, prompts = compare_plan.measured_cut_share(s.sample_max_tokens)
    assert share <= compare_plan.CUT_LIMIT and n == prompts * 11 and prompts >= 16


def test_cut_share_counts_answers_that_reach_max_tokens(tmp_path):
    """A sample of L answer tokens is cut at --max-tokens M when L >= M, or if cut at the cap."""
    import compare_plan

    f = tmp_path / "l.json"
    f.write_text(json.dumps({"cap": 100, "prompts": 1, "lengths": [10, 49, 50, 100],
                             "finished": [True, True, True, False]}))  # fmt: skip
    assert compare_plan.measured_cut_share(50, f)[0] == 0.5  # 50 and the one cut at 100
    assert compare_plan.measured_cut_share(11, f)[0] == 0.75
    assert compare_plan.measured_cut_share(101, f) is None  # past the cap: not measured
