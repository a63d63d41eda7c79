"""Gathering runs made into several suite output dirs into one report (merge_runs)."""

import csv
import json
import shutil
from pathlib import Path

import pytest

from tests.suite.helpers import SMOKE, check_report
from xlstm_rl.cli import main
from xlstm_rl.config import ConfigError, load_config
from xlstm_rl.suite import build_report, load_suite, merge_runs
from xlstm_rl.suite.merge import RECORD_FILES


def piece(out: Path, target: Path, keep) -> Path:
    """A copy of the suite output ``out`` holding only the runs whose key ``keep`` accepts."""
    shutil.copytree(out, target, ignore=shutil.ignore_patterns("report"))
    for run_dir in list(target.glob("runs/*/*/*")):
        if not keep("/".join(run_dir.relative_to(target / "runs").parts)):
            shutil.rmtree(run_dir)
    return target


def runs_csv(out: Path) -> list[dict]:
    with (out / "report" / "runs.csv").open() as f:
        return list(csv.DictReader(f))


def test_pieces_of_a_matrix_merge_into_the_report_of_the_whole(smoke, tmp_path, capsys):
    out, _ = smoke
    suite = load_suite(SMOKE)
    build_report(out)
    # the matrix run in two places: TMaze-4 in one, the POPGym env in another, one run
    # of which had not finished
    tmaze = piece(out, tmp_path / "a", lambda key: key.startswith("TMaze-4/"))
    popgym = piece(out, tmp_path / "b", lambda key: not key.startswith("TMaze-4/"))
    unfinished = popgym / "runs" / "RepeatPreviousEasy" / "gru" / "seed2"
    (unfinished / "result.json").unlink()

    merged = tmp_path / "merged"
    outcome = merge_runs(merged, [tmaze, popgym])
    assert len(outcome.copied) == 7 and outcome.already_there == []
    assert outcome.unfinished == [f"RepeatPreviousEasy/gru/seed2 (in {popgym})"]
    # only the runs' records travel, not checkpoints or TensorBoard logs
    for run_dir in merged.glob("runs/*/*/*"):
        assert sorted(p.name for p in run_dir.iterdir()) == sorted(RECORD_FILES)
    assert (merged / "suite.yaml").read_bytes() == SMOKE.read_bytes()
    # and their log_dir is their new place, as given (relative here, so no machine path)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        merge_runs("relative", [tmaze])
    for run_dir in (tmp_path / "relative").glob("runs/*/*/*"):
        where = str(run_dir.relative_to(tmp_path))
        assert json.loads((run_dir / "result.json").read_text())["config"]["log_dir"] == where
        assert load_config(run_dir / "config.yaml").log_dir == where
        assert str(tmp_path) not in "".join(p.read_text() for p in run_dir.iterdir())

    # the last run arrives later, through the CLI; the rest are there already
    shutil.copyfile(out / "runs" / unfinished.relative_to(popgym / "runs") / "result.json",
                    unfinished / "result.json")  # fmt: skip
    assert main(["report", str(merged), "--merge", str(tmaze), str(popgym)]) == 0
    printed = capsys.readouterr().out
    assert f"1 run(s) copied into {merged}, 7 already there, 0 unfinished" in printed
    check_report(merged, suite)
    assert runs_csv(merged) == runs_csv(out)
    report = (out / "report" / "report.md").read_text()
    assert (merged / "report" / "report.md").read_text() == report

    # a merged dir is an ordinary suite output dir: report rebuilds it, merge adds to it
    assert main(["report", str(merged)]) == 0
    assert runs_csv(merged) == runs_csv(out)


def test_runs_that_cannot_join_are_named_and_nothing_is_copied(smoke, tmp_path):
    out, _ = smoke
    into = piece(out, tmp_path / "into", lambda key: key.endswith("seed1"))
    before = sorted(p.relative_to(into) for p in into.rglob("*"))
    source = piece(out, tmp_path / "source", lambda key: True)

    # a run that trained again gives another result: which one is right is the user's call
    result_path = source / "runs" / "TMaze-4" / "mlstm" / "seed1" / "result.json"
    result = json.loads(result_path.read_text())
    result_path.write_text(json.dumps({**result, "final_eval": {"return_mean": 0.5}}))
    with pytest.raises(ConfigError) as refused:
        merge_runs(into, [source])
    message = str(refused.value)
    assert f"1 run(s) in {source}: TMaze-4/mlstm/seed1\n" in message
    assert f"another result for the same run is in {into}" in message
    assert "Nothing was copied" in message
    assert sorted(p.relative_to(into) for p in into.rglob("*")) == before
    result_path.write_text(json.dumps(result))

    # runs made with other settings than the suite of the dir they would join
    text = (into / "suite.yaml").read_text()
    (into / "suite.yaml").write_text(text.replace("hidden_size: 16", "hidden_size: 32"))
    with pytest.raises(ConfigError) as refused:
        merge_runs(into, [source])
    assert "8 run(s) in " in str(refused.value) and " and 3 more\n" in str(refused.value)
    assert "other settings (run -> suite): core.hidden_size: 16 -> 32" in str(refused.value)
    assert "write OUT/suite.yaml first with the overrides stated" in str(refused.value)
    # and runs outside its matrix
    (into / "suite.yaml").write_text(text.replace("seeds: [1, 2]", "seeds: [1]"))
    with pytest.raises(ConfigError) as refused:
        merge_runs(into, [source])
    assert "4 run(s) in " in str(refused.value) and "TMaze-4/mlstm/seed2\n" in str(refused.value)
    assert "not in the suite's matrix" in str(refused.value)
    assert "command-line overrides" not in str(refused.value)
    assert sorted(p.relative_to(into) for p in into.rglob("*")) == before

    with pytest.raises(FileNotFoundError, match="has no suite.yaml"):
        merge_runs(into, [tmp_path])
    with pytest.raises(ValueError, match="is the directory being merged into"):
        merge_runs(into, [into])
