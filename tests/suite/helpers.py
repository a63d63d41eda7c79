"""What the suite tests share: the smoke suite's path and a check of a full report."""

import csv
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "suites" / "smoke.yaml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def quiet(*_):
    pass


def check_report(out: Path, suite) -> None:
    """``out/report`` covers every run of ``suite``'s matrix, all finished without failing."""
    report = (out / "report" / "report.md").read_text()
    for env in suite.envs:
        for core in suite.cores:
            assert f"| {env.name} | {core} | {len(suite.seeds)}/{len(suite.seeds)} |" in report
        png = out / "report" / f"curves_{env.name}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 1000
    assert (out / "report" / "summary.png").read_bytes()[:8] == PNG_MAGIC
    assert "95% Student-t interval" in report
    assert "| core | mean eval return | mean MMER | seeds |" in report
    assert "200 episodes on held-out env seeds from 1,000,000 (a run with seed s" in report
    floors = json.loads((out / "report" / "random_floor.json").read_text())
    assert sorted(floors) == sorted(env.name for env in suite.envs)
    for env in suite.envs:
        floor = floors[env.name]
        assert floor["episodes"] == 200 and floor["env"]["id"] == env.id
        assert f"| {env.name} | {floor['return_mean']:.3f} ± " in report
    with (out / "report" / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(suite.envs) * len(suite.cores)
    assert all(int(r["seeds_ok"]) == len(suite.seeds) for r in rows)
    assert all(r["eval_return_mean"] not in ("", "nan") for r in rows)
    with (out / "report" / "runs.csv").open() as f:
        per_run = list(csv.DictReader(f))
    expected = [(s.env, s.core, str(s.seed)) for s in suite.runs()]
    assert [(r["env"], r["core"], r["seed"]) for r in per_run] == expected
    assert all(r["status"] == "ok" and float(r["cpu_time_s"]) > 0 for r in per_run)
    for r in per_run:
        cells = [r["env"], r["core"], r["seed"], f"{float(r['eval_return']):.3f}"]
        assert "| " + " | ".join(cells) + " |" in report
