"""The suite runner end to end: the smoke suite, resume, failures, and report rebuild.

Each run is a subprocess that imports torch, so these tests take tens of seconds.
"""

import csv
import dataclasses
import json
import math
import os
from pathlib import Path

import pytest

from tests.suite.helpers import ROOT, SMOKE, check_report, quiet
from xlstm_rl.cli import main
from xlstm_rl.config import ConfigError, load_config
from xlstm_rl.suite import build_report, load_suite, run_suite
from xlstm_rl.suite.runner import check_envs, recorded_config
from xlstm_rl.suite.spec import suite_from_dict

HERE = Path(__file__).resolve().parent
SUITES = sorted((ROOT / "configs" / "suites").glob("*.yaml"))
PYTHONPATH = os.environ.get("PYTHONPATH")
FAILED = ["exits/gru/seed1", "nan/gru/seed1", "raises/gru/seed1"]


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_shipped_suites_load_and_expand(path):
    # expanding the matrix checks every run's config (keys and values) by load_config
    suite = load_suite(path)
    assert len(suite.runs()) == len(suite.envs) * len(suite.cores) * len(suite.seeds) > 0
    check_envs(suite.runs())  # and every env of it can be made, as run_suite checks


def test_smoke_suite_end_to_end(smoke):
    out, outcome = smoke
    suite = load_suite(SMOKE)
    assert len(outcome.ran) == 8 and not outcome.failed and not outcome.skipped
    for spec in suite.runs():
        run_dir = spec.run_dir(out)
        result = json.loads((run_dir / "result.json").read_text())
        assert result["status"] == "ok" and result["error"] is None
        assert (result["env"], result["core"], result["seed"]) == (spec.env, spec.core, spec.seed)
        assert result["final_eval"]["episodes"] == 4 and result["global_step"] == 384
        assert 0 < result["train_time_s"] <= result["wall_time_s"] and result["cpu_time_s"] > 0
        assert result["config"]["policy"]["prev_action"] is True
        # config.yaml is a whole TrainConfig (defaults filled in) that train reads as it is
        config = load_config(run_dir / "config.yaml")
        assert config.to_dict() == result["config"] and config.total_steps == 384
        assert config.log_dir == str(run_dir) and config.name == "train"
        place = json.loads((run_dir / "suite_run.json").read_text())
        assert place == {
            "suite": "smoke",
            "env": spec.env,
            "core": spec.core,
            "seed": spec.seed,
            "mmer_window": suite.mmer_window,
        }
        assert (run_dir / "train" / "checkpoint.pt").stat().st_size > 0
        with (run_dir / "curve.csv").open() as f:
            curve = list(csv.DictReader(f))
        assert curve and all(0 < int(r["step"]) <= 384 for r in curve)
        assert all(-1.0 <= float(r["episodic_return"]) <= 1.0 for r in curve)
    check_report(out, suite)


def test_resume_skips_finished_runs_and_finishes_interrupted_ones(smoke):
    out, _ = smoke
    suite = load_suite(SMOKE)
    results = {spec.key: spec.run_dir(out) / "result.json" for spec in suite.runs()}
    stamps = {key: path.stat().st_mtime_ns for key, path in results.items()}

    outcome = run_suite(SMOKE, out, workers=2, echo=quiet, report=False)
    assert outcome.ran == [] and len(outcome.skipped) == 8
    assert all(results[key].stat().st_mtime_ns == stamps[key] for key in results)

    # an interrupted run: its checkpoint is there but no result; it resumes, not restarts
    interrupted = "TMaze-4/gru/seed1"
    before = json.loads(results[interrupted].read_text())
    results[interrupted].unlink()
    outcome = run_suite(SMOKE, out, workers=2, echo=quiet, report=False)
    assert outcome.ran == [interrupted] and len(outcome.skipped) == 7
    result = json.loads(results[interrupted].read_text())
    assert result["status"] == "ok" and result["global_step"] == 384
    # its training time is the whole run's, from the checkpoint, not this session's nothing
    # (the checkpoint's totals are taken as its last update saves it, just before the end)
    assert before["train_time_s"] - 1 <= result["train_time_s"] <= before["train_time_s"] + 1


def test_cli_runs_only_the_chosen_part_of_the_matrix(smoke, capsys):
    out, _ = smoke
    suite = load_suite(SMOKE)
    chosen, other = "TMaze-4/gru/seed1", "RepeatPreviousEasy/mlstm/seed2"
    paths = {spec.key: spec.run_dir(out) / "result.json" for spec in suite.runs()}
    paths[chosen].unlink()
    paths[other].unlink()
    argv = ["suite", str(SMOKE), "--out", str(out), "--envs", "TMaze-4", "--cores", "gru"]
    assert main([*argv, "--seeds", "1", "--eval_episodes", "4"]) == 0
    assert "1 runs to do, 0 finished" in capsys.readouterr().out
    assert paths[chosen].is_file() and not paths[other].is_file()
    assert "Runs finished: 7 of 8" in (out / "report" / "report.md").read_text()
    # the rest of the matrix is still there to finish
    outcome = run_suite(SMOKE, out, workers=2, echo=quiet, report=False)
    assert outcome.ran == [other] and len(outcome.skipped) == 7


def test_subset_keeps_order_and_names_unknown_entries():
    suite = load_suite(SMOKE)
    part = suite.subset(envs=["RepeatPreviousEasy"], seeds=[2])
    assert [e.name for e in part.envs] == ["RepeatPreviousEasy"] and part.cores == suite.cores
    assert [spec.key for spec in part.runs()] == [
        "RepeatPreviousEasy/mlstm/seed2",
        "RepeatPreviousEasy/gru/seed2",
    ]
    assert suite.subset() == suite
    with pytest.raises(ConfigError, match=r"cores \['lsmt'\] not in suite 'smoke'; valid"):
        suite.subset(cores=["lsmt"])
    with pytest.raises(ConfigError, match=r"seeds \[7\]"):
        suite.subset(seeds=[7])


def test_env_ids_and_kwargs_are_checked_before_any_run_starts(tmp_path):
    def suite(env):
        tmaze = {"name": "fine", "id": "xlstm_rl/TMaze-v0", "kwargs": {"corridor_length": 3}}
        return suite_from_dict(
            {"name": "typo", "cores": ["gru"], "seeds": [1], "envs": [tmaze, env]}
        )

    typo = suite({"name": "typo", "id": "popgym-RepeatPrevEasy-v0"})
    with pytest.raises(ConfigError, match=r"env 'typo' cannot be made: unknown env id") as e:
        run_suite(typo, tmp_path / "out", echo=quiet)
    assert "Did you mean: popgym-RepeatPreviousEasy-v0" in str(e.value)
    kwarg = suite({"name": "T5", "id": "xlstm_rl/TMaze-v0", "kwargs": {"corridor_lenght": 5}})
    with pytest.raises(ConfigError, match=r"env 'T5' cannot be made: .*'corridor_lenght'"):
        run_suite(kwarg, tmp_path / "out", echo=quiet)
    assert not (tmp_path / "out").exists()  # not even the fine env's runs were started


def test_suite_file_errors_name_the_key_and_the_file(tmp_path):
    with pytest.raises(
        ConfigError, match=r"seeds must be a list of ints, got 'two' in \[1, 'two'\]"
    ):
        suite_from_dict({"cores": ["gru"], "seeds": [1, "two"], "envs": [{"id": "x-v0"}]})
    with pytest.raises(ConfigError, match=r"cores must be a list of strs, got 'gru'"):
        suite_from_dict({"cores": "gru", "seeds": [1], "envs": [{"id": "x-v0"}]})
    seeds = tmp_path / "seeds.yaml"
    seeds.write_text("name: s\ncores: [gru]\nseeds: [1, two]\nenvs: [{id: x-v0}]\n")
    with pytest.raises(ConfigError, match=rf"^{seeds}: suite: seeds must be a list of ints"):
        load_suite(seeds)
    base = {"cores": ["gru"], "seeds": [1], "envs": [{"id": "x-v0"}]}
    # the report reads only these two final-eval keys (another one was a KeyError there)
    with pytest.raises(ConfigError, match=r"solve.metric must be one of \('success_rate'"):
        suite_from_dict({**base, "solve": {"metric": "succes_rate", "threshold": 0.9}})
    with pytest.raises(ConfigError, match=r"solve.threshold must be a finite number, got 'high'"):
        suite_from_dict({**base, "solve": {"metric": "return_mean", "threshold": "high"}})
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: s\ncores: [gru\nseeds: [1]\n")
    with pytest.raises(ConfigError, match=rf"^{broken} is not valid YAML") as e:
        load_suite(broken)
    assert f'in "{broken}", line 2' in str(e.value)


def test_report_rebuilds_from_finished_runs(smoke, capsys):
    out, _ = smoke
    for path in (out / "report").iterdir():
        path.unlink()
    assert main(["report", str(out)]) == 0
    assert "report.md" in capsys.readouterr().out
    check_report(out, load_suite(SMOKE))


def changed_smoke(tmp_path: Path, old: str, new: str) -> Path:
    text = SMOKE.read_text()
    assert old in text
    path = tmp_path / "smoke.yaml"
    path.write_text(text.replace(old, new))
    return path


def test_a_changed_suite_or_override_is_refused_where_runs_are_finished(smoke, tmp_path, capsys):
    out, _ = smoke
    configs = sorted(out.glob("runs/*/*/*/config.yaml"))
    stamps = [path.stat().st_mtime_ns for path in configs]
    bigger = changed_smoke(tmp_path, "core: {hidden_size: 16}", "core: {hidden_size: 32}")
    with pytest.raises(ConfigError) as refused:
        run_suite(bigger, out, echo=quiet, report=False)
    message = str(refused.value)
    assert "8 run(s): TMaze-4/mlstm/seed1 (finished), TMaze-4/mlstm/seed2 (finished)" in message
    assert "and 3 more" in message and "core.hidden_size: 16 -> 32" in message
    assert "use a new --out" in message.lower() and "Nothing was run or written" in message
    # a longer budget from the command line, through the CLI: exit status 2, nothing run
    with pytest.raises(SystemExit) as exited:
        main(["suite", str(SMOKE), "--out", str(out), "--total_steps", "512"])
    assert exited.value.code == 2
    assert "total_steps: 384 -> 512" in capsys.readouterr().err
    # only runs outside the chosen part changed: suite.yaml, which the report reads,
    # would no longer describe them, so that is refused too
    faster = changed_smoke(
        tmp_path,
        "popgym-RepeatPreviousEasy-v0",
        "popgym-RepeatPreviousEasy-v0\n    overrides: {ppo.lr: 2.0e-3}",
    )
    with pytest.raises(ConfigError, match=r"RepeatPreviousEasy/mlstm/seed1 \(finished\)") as e:
        run_suite(faster, out, echo=quiet, report=False, envs=["TMaze-4"])
    assert "ppo.lr: 0.001 -> 0.002" in str(e.value) and "TMaze-4/" not in str(e.value)
    assert (out / "suite.yaml").read_bytes() == SMOKE.read_bytes()
    assert [path.stat().st_mtime_ns for path in configs] == stamps
    # the same suite file in another place, or the copy in out itself, is no change
    outcome = run_suite(out / "suite.yaml", out, echo=quiet, report=False)
    assert outcome.ran == [] and len(outcome.skipped) == 8 and not outcome.failed
    # nor is where and how fast the runs go (another machine, more threads)
    overrides = {"device": "auto", "torch_threads": 2, "checkpoint_every": 7}
    outcome = run_suite(SMOKE, out, echo=quiet, report=False, overrides=overrides)
    assert outcome.ran == [] and len(outcome.skipped) == 8


def test_an_interrupted_run_resumes_only_with_the_settings_it_started_with(smoke, tmp_path):
    out, _ = smoke
    run_dir = out / "runs" / "TMaze-4" / "gru" / "seed1"
    result = (run_dir / "result.json").read_bytes()
    (run_dir / "result.json").unlink()  # its checkpoint is there: it would resume
    try:
        bigger = changed_smoke(tmp_path, "total_steps: 384", "total_steps: 768")
        with pytest.raises(ConfigError, match=r"TMaze-4/gru/seed1 \(in progress\)"):
            run_suite(bigger, out, echo=quiet, report=False, envs=["TMaze-4"], cores=["gru"])
    finally:
        (run_dir / "result.json").write_bytes(result)
    # a run that never reached a checkpoint starts afresh, so its old config binds nothing
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    assert recorded_config(fresh) is None
    assert recorded_config(run_dir)[0] == "finished"


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    """A suite of one fine env and three that fail, run once: (out, outcome)."""
    tmp_path = tmp_path_factory.mktemp("faults")
    smoke = load_suite(SMOKE)
    faulty = {"id": "xlstm_rl_test/Faulty-v0", "overrides": {"env.module": "suite_faulty_envs"}}
    suite = suite_from_dict(
        {
            "name": "faults",
            "cores": ["gru"],
            "seeds": [1],
            "base": {**smoke.base, "total_steps": 4 * 32 * 3},
            "envs": [
                {"name": "raises", **faulty, "kwargs": {"fault": "raise", "after": 5}},
                # NaN rewards from each env's 40th step: rollouts of 32, so in update 2
                {"name": "nan", **faulty, "kwargs": {"fault": "nan", "after": 40}},
                {"name": "exits", **faulty, "kwargs": {"fault": "exit", "after": 5}},
                {"name": "fine", "id": "xlstm_rl/TMaze-v0", "kwargs": {"corridor_length": 3}},
            ],
        }
    )
    with pytest.MonkeyPatch.context() as patch:
        # the workers import suite_faulty_envs; what PYTHONPATH reaches stays reachable
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HERE), PYTHONPATH])))
        yield tmp_path, run_suite(suite, tmp_path, workers=2, echo=quiet)


def test_failed_runs_are_recorded_and_the_suite_goes_on(faults):
    tmp_path, outcome = faults
    assert sorted(outcome.failed) == FAILED

    def result(env):
        return json.loads((tmp_path / "runs" / env / "gru" / "seed1" / "result.json").read_text())

    assert result("fine")["status"] == "ok"
    raised = result("raises")
    assert raised["status"] == "failed"
    assert "RuntimeError: faulty env: step failed on purpose" in raised["error"]
    assert "Traceback" in raised["traceback"]
    nan = result("nan")["error"]
    assert nan.startswith("FloatingPointError at update 2 (after global step 128)")
    assert "non-finite loss" in nan
    assert "worker exited with code 3" in result("exits")["error"]

    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Failed runs" in report
    assert "| nan/gru/seed1 | FloatingPointError at update 2" in report
    assert "| fine | gru | 1/1 |" in report and "| raises | gru | 0/1 |" in report
    assert "| raises | gru | 1 | failed | - |" in report  # the per-run table
    with (tmp_path / "report" / "runs.csv").open() as f:
        runs = {r["env"]: r for r in csv.DictReader(f)}
    assert runs["fine"]["status"] == "ok" and runs["fine"]["error"] == ""
    assert runs["nan"]["status"] == "failed" and "non-finite loss" in runs["nan"]["error"]
    assert build_report(tmp_path) == tmp_path / "report" / "report.md"


def test_a_rerun_counts_the_failed_runs_recorded_earlier(faults, capsys):
    out, _ = faults
    outcome = run_suite(load_suite(out / "suite.yaml"), out, echo=quiet, report=False)
    assert outcome.ran == [] and len(outcome.skipped) == 4 and sorted(outcome.failed) == FAILED
    # the CLI's exit status too, with the suite file that the first call copied into out
    assert main(["suite", str(out / "suite.yaml"), "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "0 runs to do, 4 finished (3 failed)" in printed
    assert f"3 of 4 runs failed ({', '.join(FAILED)}); --retry-failed reruns them" in printed


def test_random_floor_script_prints_every_env_of_a_suite(capsys):
    import runpy

    script = runpy.run_path(str(ROOT / "scripts" / "random_floor.py"))
    assert script["main"]([str(SMOKE), "--episodes", "5"]) == 0
    out = capsys.readouterr().out
    assert "random policy, 5 episodes per env, suite smoke" in out
    assert "| TMaze-4 | " in out and "| RepeatPreviousEasy | -" in out


def test_steps_to_solve_is_the_first_window_that_meets_the_threshold():
    from xlstm_rl.suite.report import steps_to_solve

    curve = [(100, 0.5), (200, 1.0), (300, 0.8), (400, 1.0), (500, 1.0)]
    assert steps_to_solve(curve, window=1, threshold=0.9) == 200
    assert steps_to_solve(curve, window=2, threshold=0.9) == 300  # (1.0 + 0.8) / 2
    assert steps_to_solve(curve, window=2, threshold=0.95) == 500
    assert steps_to_solve(curve, window=3, threshold=0.9) == 400  # (1.0 + 0.8 + 1.0) / 3 > 0.9
    assert steps_to_solve(curve, window=3, threshold=1.0) is None
    assert steps_to_solve(curve[:2], window=3, threshold=0.0) is None


def test_per_core_summary_means_eval_and_mmer_over_envs_then_seeds():
    from xlstm_rl.suite.report import Run, per_core_summary

    suite = suite_from_dict(
        {
            "name": "s",
            "cores": ["a", "b"],
            "seeds": [1, 2],
            "mmer_window": 2,
            "envs": [{"name": "E1", "id": "x-v0"}, {"name": "E2", "id": "y-v0"}],
        }
    )
    ok = {"status": "ok"}

    def run(env, core, seed, final, curve, status=ok):
        result = {**status, "final_eval": {"return_mean": final}}
        return Run(env, core, seed, result, [(i, v) for i, v in enumerate(curve)])

    runs = [
        # core a: MMER per run = best mean of 2 consecutive updates
        run("E1", "a", 1, 0.2, [0.0, 0.4, 0.6, 0.2]),  # MMER 0.5
        run("E2", "a", 1, 0.4, [0.1, 0.1]),  # MMER 0.1
        run("E1", "a", 2, 0.6, [0.9, 0.7]),  # MMER 0.8
        run("E2", "a", 2, 0.8, [0.0, 0.2, 0.4]),  # MMER 0.3
        # core b: seed 2 failed on E2, so only seed 1 counts
        run("E1", "b", 1, -1.0, [-1.0]),
        run("E2", "b", 1, 0.0, [0.0]),
        run("E1", "b", 2, 1.0, [1.0]),
        run("E2", "b", 2, 1.0, [1.0], status={"status": "failed"}),
    ]
    summary = per_core_summary(runs, suite)
    eval_mean, _, mmer_mean, _, seeds = summary["a"]
    assert seeds == 2
    assert eval_mean == pytest.approx((0.3 + 0.7) / 2)
    assert mmer_mean == pytest.approx((0.3 + 0.55) / 2)
    eval_b, eval_b_ci, mmer_b, _, seeds_b = summary["b"]
    assert seeds_b == 1 and eval_b == pytest.approx(-0.5) and mmer_b == pytest.approx(-0.5)
    assert eval_b_ci != eval_b_ci  # one seed: no interval (nan)

    # an env whose every run failed is left out (it blanked every core's summary)
    dead = [
        run("E3", core, seed, 0.0, [0.0], {"status": "failed"}) for core in "ab" for seed in (1, 2)
    ]
    assert repr(per_core_summary(runs + dead, suite)) == repr(summary)  # nan != nan
    # a seed without an MMER on some env (no episode ended in training) counts in neither
    # column, so both are over the same seeds
    runs[1] = run("E2", "a", 1, 0.4, [])
    eval_a, eval_a_ci, mmer_a, mmer_a_ci, seeds_a = per_core_summary(runs, suite)["a"]
    assert seeds_a == 1 and eval_a == pytest.approx(0.7) and mmer_a == pytest.approx(0.55)
    assert eval_a_ci != eval_a_ci and mmer_a_ci != mmer_a_ci


def test_curves_plot_each_seed_and_spans_the_seeds_not_the_wide_band(tmp_path, monkeypatch):
    import matplotlib.figure

    from xlstm_rl.suite.plots import plot_curves, seed_band
    from xlstm_rl.suite.report import Run

    suite = suite_from_dict(
        {
            "name": "s",
            "cores": ["a", "b"],
            "seeds": [1, 2],
            "mmer_window": 1,
            "envs": [{"name": "E", "id": "x-v0"}],
        }
    )
    ok = {"status": "ok"}
    steps = range(0, 50, 10)
    runs = [  # core a: one seed learned (0.9), one guessed (0.5); core b: one seed
        Run("E", "a", 1, ok, [(s, 0.9) for s in steps]),
        Run("E", "a", 2, ok, [(s, 0.5) for s in steps]),
        Run("E", "b", 1, ok, [(s, 0.6) for s in steps]),
    ]
    grid, mean, half, seeds = seed_band([r.curve for r in runs[:2]], window=1)
    assert seeds.shape == (2, len(grid)) and mean == pytest.approx([0.7] * len(grid))
    assert half[0] == pytest.approx(12.706 * 0.2, rel=1e-3)  # t(1) * sd (0.283) / sqrt(2)

    seen = {}
    save = matplotlib.figure.Figure.savefig

    def record(fig, *args, **kwargs):
        ax = fig.axes[0]
        seen["ylim"], seen["lines"] = ax.get_ylim(), len(ax.lines)
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    path = plot_curves(tmp_path, suite, runs, "E", floor=0.1)
    assert path.is_file()
    low, high = seen["ylim"]
    # the band of core a reaches 0.7 +- 2.5; the axis spans the seeds and the floor only
    assert 0.05 <= low < 0.1 and 0.9 < high <= 0.95
    # means of a and b, a's two seeds, the floor (one seed: no extra line)
    assert seen["lines"] == 2 + 2 + 1


def test_report_of_a_partial_matrix_leaves_out_what_was_not_run():
    from xlstm_rl.suite.report import Run, aggregate, render_markdown

    suite = suite_from_dict(
        {
            "name": "h",
            "cores": ["a", "b", "c"],
            "seeds": [1, 2],
            "mmer_window": 1,
            "horizon": "corridor_length",
            "envs": [
                {"name": f"T{n}", "id": "xlstm_rl/TMaze-v0", "kwargs": {"corridor_length": n}}
                for n in (10, 100)
            ],
        }
    )

    def run(env, core, seed, success):
        result = {"status": "ok", "final_eval": {"return_mean": 2 * success - 1,
                                                 "success_rate": success}}  # fmt: skip
        return Run(env, core, seed, result, [(1, 0.0)], [(1, success)])

    # a solves T10 and T100; b solves T10 and has not run T100; c has not run at all
    runs = [run(env, "a", s, 1.0) for env in ("T10", "T100") for s in (1, 2)]
    runs += [run("T10", "b", s, 1.0) for s in (1, 2)]
    report = render_markdown(suite, runs, aggregate(runs, suite), plots=[])
    assert "| T10 | a | 2/2 |" in report and "| T100 | a | 2/2 |" in report
    assert "| T10 | b | 2/2 |" in report
    assert "| T100 | b |" not in report and "| T10 | c |" not in report
    assert "Not run yet (left out of the table): T10: c; T100: b, c." in report
    # the headline says how far each core was tried, and a core never run is not "none"
    assert "| a | 100 | 100 |" in report and "| b | 10 | 10 |" in report
    assert "| c | no finished run | - |" in report
    assert "| c | - | - | 0 |" not in report  # no per-core summary row for c
    # the same cores missing from every env: one short line
    runs += [run("T100", "b", s, 0.5) for s in (1, 2)]
    report = render_markdown(suite, runs, aggregate(runs, suite), plots=[])
    assert "Not run yet (left out of the table): c on every environment." in report
    assert "| b | 10 | 100 |" in report
    # a run whose training ended no episode has no MMER: the cell says over how many seeds
    runs[-1] = dataclasses.replace(runs[-1], curve=[])
    report = render_markdown(suite, runs, aggregate(runs, suite), plots=[])
    assert "| T100 | b | 2/2 | 0.000 ± 0.000 | 0.50 ± 0.00 | 0.000 (n=1) |" in report


def test_report_gives_training_wall_and_cpu_time_and_reads_older_results():
    from xlstm_rl.suite.report import Run, aggregate, render_markdown

    suite = suite_from_dict(
        {"name": "t", "cores": ["a", "b", "c"], "seeds": [1, 2], "envs": [{"id": "x-v0"}]}
    )

    def run(core, seed, **times):
        result = {"status": "ok", "global_step": 384, "final_eval": {"return_mean": 0.5}}
        return Run("x-v0", core, seed, {**result, **times}, [(384, 0.5)])

    runs = [  # a: recorded both (the worker's own wall time is not what counts);
        run("a", 1, train_time_s=100.0, cpu_time_s=90.0, wall_time_s=5.0),
        run("a", 2, train_time_s=300.0, cpu_time_s=110.0, wall_time_s=6.0),
        run("b", 1, wall_time_s=40.0),  # b: results from before: the worker's wall time only
        run("b", 2, wall_time_s=60.0, train_time_s=None, cpu_time_s=None),
        run("c", 1, train_time_s=10.0, cpu_time_s=9.0),  # c: one seed recorded CPU time
        run("c", 2, wall_time_s=30.0),
    ]
    rows = {row["core"]: row for row in aggregate(runs, suite)}
    assert (rows["a"]["wall_time_s_mean"], rows["a"]["cpu_time_s_mean"]) == (200.0, 100.0)
    assert rows["b"]["wall_time_s_mean"] == 50.0 and math.isnan(rows["b"]["cpu_time_s_mean"])
    assert rows["c"]["wall_time_s_mean"] == 20.0 and math.isnan(rows["c"]["cpu_time_s_mean"])
    report = render_markdown(suite, runs, list(rows.values()), plots=[])
    assert "| env steps | wall s | CPU s |" in report
    assert "| 384 | 200 | 100 |" in report and "| 384 | 50 | - |" in report
    # per run: each seed's own times (steps to solve "-": these runs logged no success)
    assert "| x-v0 | a | 2 | 0.500 | - | 0.500 | - | 384 | 300 | 110 |" in report
    assert "| x-v0 | b | 1 | 0.500 | - | 0.500 | - | 384 | 40 | - |" in report


def test_steps_to_solve_says_not_logged_apart_from_never():
    # POPGym's envs report no success during training: their runs' steps to solve is
    # unknown, not "never" (the report once said "never (0/3)" beside eval success 1.00)
    from xlstm_rl.suite.report import Run, aggregate, render_markdown, run_rows

    suite = suite_from_dict(
        {"name": "t", "cores": ["a", "b", "c"], "seeds": [1, 2], "envs": [{"id": "x-v0"}]}
    )
    result = {"status": "ok", "global_step": 384, "final_eval": {"return_mean": 0.5}}
    curve = [(128 * j, 0.5) for j in range(1, 31)]
    solved = [(step, 1.0) for step, _ in curve]
    runs = [
        Run("x-v0", "a", 1, result, curve),  # a: no success logged on either seed
        Run("x-v0", "a", 2, result, curve),
        Run("x-v0", "b", 1, result, curve, solved),  # b: one seed solved, one logged none
        Run("x-v0", "b", 2, result, curve),
        Run("x-v0", "c", 1, result, curve, [(s, 0.0) for s, _ in curve]),  # c: never
        Run("x-v0", "c", 2, result, curve, [(s, 0.0) for s, _ in curve]),
    ]
    per_run = {(r["core"], r["seed"]): r for r in run_rows(runs, suite)}
    assert [per_run["a", 1]["solve_logged"], per_run["b", 1]["solve_logged"]] == [False, True]
    rows = {row["core"]: row for row in aggregate(runs, suite)}
    assert [rows[c]["solve_logged_seeds"] for c in "abc"] == [0, 1, 2]
    report = render_markdown(suite, runs, list(rows.values()), plots=[])
    assert "| x-v0 | a | 2/2 | 0.500 ± 0.000 | - | 0.500 ± 0.000 | - |" in report
    assert "| x-v0 | b | 2/2 | 0.500 ± 0.000 | - | 0.500 ± 0.000 | 1,280 (1/1) |" in report
    assert "| x-v0 | c | 2/2 | 0.500 ± 0.000 | - | 0.500 ± 0.000 | never (0/2) |" in report
    assert "| x-v0 | a | 1 | 0.500 | - | 0.500 | - |" in report
    assert "| x-v0 | b | 1 | 0.500 | - | 0.500 | 1,280 |" in report
    assert "| x-v0 | c | 1 | 0.500 | - | 0.500 | never |" in report


def test_report_says_so_when_no_run_has_finished_without_failing():
    from xlstm_rl.suite.report import Run, aggregate, render_markdown

    suite = suite_from_dict(
        {"name": "f", "cores": ["a"], "seeds": [1, 2], "envs": [{"id": "x-v0"}]}
    )
    runs = [Run("x-v0", "a", 1, {"status": "failed", "error": "boom", "final_eval": {}}, [])]
    report = render_markdown(suite, runs, aggregate(runs, suite), plots=[])
    assert "Runs finished: 1 of 2 (1 failed)." in report
    assert "no run has finished without failing yet." in report and "none yet" not in report
    ok = {"status": "ok", "global_step": 384, "final_eval": {"return_mean": 0.5}}
    runs.append(Run("x-v0", "a", 2, ok, [(384, 0.5)]))
    report = render_markdown(suite, runs, aggregate(runs, suite), plots=[])
    assert "the finished runs trained for 384 env steps" in report


def test_random_floor_script_restricts_the_actions_as_the_runs_do(tmp_path, capsys):
    import runpy

    import yaml

    suite = yaml.safe_load(SMOKE.read_text())
    # the active maze with forward only: the junction is reached but never turned at
    suite["envs"] = [
        {
            "name": "Forward",
            "id": "xlstm_rl/TMaze-v0",
            "kwargs": {"corridor_length": 3, "passive": False, "max_steps": 6},
            "overrides": {"env.actions": [2]},
        }
    ]
    path = tmp_path / "forward.yaml"
    path.write_text(yaml.safe_dump(suite))
    script = runpy.run_path(str(ROOT / "scripts" / "random_floor.py"))
    assert script["main"]([str(path), "--episodes", "5"]) == 0
    # every episode runs to the step limit without a turn: return 0, success 0
    assert "| Forward | 0.000 ± 0.000 | 0.000 | 6.0 |" in capsys.readouterr().out


def test_report_names_settings_the_suite_file_does_not_give():
    # command-line overrides (--total_steps, --core.options) reach each run's config but
    # not suite.yaml: the report reads them back from the runs' own configs
    from xlstm_rl.config import apply_overrides
    from xlstm_rl.suite.report import Run, aggregate, render_markdown

    suite = suite_from_dict(
        {
            "name": "o",
            "cores": ["gru", "lstm"],
            "seeds": [1, 2],
            "base": {"total_steps": 384, "core": {"hidden_size": 16}},
            "envs": [
                {"name": f"T{n}", "id": "xlstm_rl/TMaze-v0", "kwargs": {"corridor_length": n}}
                for n in (4, 8)
            ],
        }
    )
    specs = {spec.key: spec for spec in suite.runs()}
    longer = {"total_steps": 512, "core.options": {"num_layers": 2}}

    def run(env, core, seed, overrides=None, recorded=True):
        result = {"status": "ok", "global_step": 384, "final_eval": {"return_mean": 0.5}}
        if recorded:  # the worker records the config it trained with
            config = specs[f"{env}/{core}/seed{seed}"].config
            result["config"] = apply_overrides(config, overrides or {})
        return Run(env, core, seed, result, [(384, 0.5)])

    plain = [run(env, "lstm", s) for env in ("T4", "T8") for s in (1, 2)]
    report = render_markdown(suite, plain, aggregate(plain, suite), plots=[])
    assert "Settings other than the suite file's" not in report
    runs = plain + [run(env, "gru", s, longer) for env in ("T4", "T8") for s in (1, 2)]
    runs[0] = run("T4", "lstm", 1, {"ppo.lr": 0.01})
    runs[1] = run("T4", "lstm", 2, recorded=False)  # a result from before configs were kept
    report = render_markdown(suite, runs, aggregate(runs, suite), plots=[])
    assert "## Settings other than the suite file's" in report
    section = report.split("## Settings other than the suite file's")[1].split("## Results")[0]
    assert "- 4 runs (core gru; every env; every seed):" in section
    assert "  - `total_steps: 384 -> 512`" in section
    assert "  - `core.options.num_layers: (unset) -> 2`" in section and "{}" not in section
    assert "- 1 run (core lstm; env T4; seed 1):" in section
    assert "  - `ppo.lr: 0.00025 -> 0.01`" in section
    assert section.count("\n- ") == 2  # the unchanged and unrecorded lstm runs: not listed
