"""The suite dirs published under docs/results keep the records of every run in their
report, so that later runs can join them (``xlstm-rl report DIR --merge NEW``) from a
clean checkout. The records once lived only on the machine that made them (the
.gitignore's ``runs/`` kept them out of git): this test fails if that happens again, or if
a record and the committed report disagree."""

import csv
import math
from pathlib import Path

import pytest

from xlstm_rl.suite import load_suite
from xlstm_rl.suite.report import collect_runs, run_rows

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
SUITE_DIRS = sorted(p.parent for p in RESULTS.glob("*/runs") if (p.parent / "suite.yaml").exists())


def key(row) -> tuple[str, str, int]:
    return row["env"], row["core"], int(row["seed"])


def test_there_is_a_published_suite_dir():
    assert SUITE_DIRS, f"no suite dir with run records under {RESULTS}"


@pytest.mark.parametrize("out", SUITE_DIRS, ids=lambda p: p.name)
def test_records_match_the_committed_report(out):
    suite = load_suite(out / "suite.yaml")
    rows = run_rows(collect_runs(out, suite), suite)
    with open(out / "report" / "runs.csv", newline="") as f:
        committed = list(csv.DictReader(f))
    assert sorted(map(key, rows)) == sorted(map(key, committed)), (
        f"{out}: the runs with records differ from the runs in report/runs.csv"
    )
    by_key = {key(r): r for r in committed}
    for row in rows:
        saved = by_key[key(row)]
        assert row["status"] == saved["status"]
        for column in ("eval_return", "eval_success", "mmer"):
            assert math.isclose(float(saved[column]), row[column], rel_tol=1e-9), (key(row), column)
    for record in (out / "runs").glob("*/*/seed*/*"):  # every record file, not only config
        text = record.read_text()
        assert "/tmp/" not in text and "/work/" not in text and "/home/" not in text, record
