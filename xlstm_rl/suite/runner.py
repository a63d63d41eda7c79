"""Run a suite: every (env, core, seed) of the matrix as an ordinary training run.

Each run is a subprocess (``python -m xlstm_rl.suite RUN_DIR``), so a run that
crashes, even hard (a segfault, the OOM killer), is recorded as failed and the
others go on; up to ``workers`` run at once. The layout under ``out``::

    suite.yaml                      the suite file, as run (``report`` reads it)
    runs/<env>/<core>/seed<k>/
        config.yaml                 the run's full TrainConfig
        train/                      TensorBoard events and checkpoint.pt
        log.txt                     the worker's stdout and stderr
        curve.csv                   step, episodic return/length/success per update
        result.json                 status, error, final evaluation, MMER (written last)
    report/                         see ``xlstm_rl.suite.report``

A run is finished when its ``result.json`` exists: a rerun skips it (``retry_failed``
reruns failed ones), and a run interrupted mid-training resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xlstm_rl.suite.spec import RunSpec, SuiteSpec, load_suite
from xlstm_rl.suite.worker import write_json

LOG_TAIL_CHARS = 4000


@dataclass
class SuiteOutcome:
    """What ``run_suite`` did: run keys by what happened to them, and the report path."""

    out: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    report: Path | None = None


def read_result(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "result.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _prepare(spec: RunSpec, suite: SuiteSpec, out: Path, retry_failed: bool) -> bool:
    """Write the run's config; False if the run is already finished."""
    run_dir = spec.run_dir(out)
    result = read_result(run_dir)
    if result is not None:
        if not (retry_failed and result.get("status") == "failed"):
            return False
        (run_dir / "result.json").unlink()
        shutil.rmtree(run_dir / "train", ignore_errors=True)  # a failed run starts afresh
    run_dir.mkdir(parents=True, exist_ok=True)
    config = dict(spec.config, log_dir=str(run_dir), name="train")
    config["suite_run"] = {
        "suite": suite.name,
        "env": spec.env,
        "core": spec.core,
        "seed": spec.seed,
        "mmer_window": suite.mmer_window,
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return True


def _run_one(spec: RunSpec, out: Path) -> dict[str, Any]:
    """Run the worker; if it died without a result, record one from its log."""
    run_dir = spec.run_dir(out)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    with (run_dir / "log.txt").open("a") as log:
        code = subprocess.call(
            [sys.executable, "-m", "xlstm_rl.suite", str(run_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    result = read_result(run_dir)
    if result is None:
        tail = (run_dir / "log.txt").read_text()[-LOG_TAIL_CHARS:]
        last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
        result = {
            "suite": None,
            "env": spec.env,
            "core": spec.core,
            "seed": spec.seed,
            "status": "failed",
            "error": f"worker exited with code {code} and no result: {last}",
            "traceback": tail,
            "final_eval": {},
            "wall_time_s": round(time.perf_counter() - start, 1),
        }
        write_json(run_dir / "result.json", result)
    return result


def run_suite(
    suite: str | os.PathLike | SuiteSpec,
    out: str | os.PathLike | None = None,
    workers: int = 1,
    overrides: dict[str, Any] | None = None,
    retry_failed: bool = False,
    report: bool = True,
    echo=print,
    envs: list[str] | None = None,
    cores: list[str] | None = None,
    seeds: list[int] | None = None,
) -> SuiteOutcome:
    """Run every unfinished run of ``suite`` (a YAML path or SuiteSpec), then the report.

    ``overrides`` (dotted keys) apply to every run, after the suite's own; ``out``
    defaults to ``runs/suites/<name>``. ``envs``, ``cores`` and ``seeds`` run only part
    of the matrix (None: all); the report still covers every finished run under ``out``.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    source = None
    if not isinstance(suite, SuiteSpec):
        source = Path(suite)
        suite = load_suite(source)
    selected = suite.subset(envs, cores, seeds)  # a bad name fails before anything is written
    out = Path(out) if out is not None else Path("runs/suites") / suite.name
    out.mkdir(parents=True, exist_ok=True)
    if source is not None:
        shutil.copyfile(source, out / "suite.yaml")
    else:
        data = dataclasses.asdict(suite)
        (out / "suite.yaml").write_text(yaml.safe_dump(data, sort_keys=False))

    outcome = SuiteOutcome(out=out)
    todo = []
    for spec in selected.runs(overrides):
        if _prepare(spec, suite, out, retry_failed):
            todo.append(spec)
        else:
            outcome.skipped.append(spec.key)
    echo(f"suite {suite.name}: {len(todo)} runs to do, {len(outcome.skipped)} finished, in {out}")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_run_one, spec, out): spec for spec in todo}
        for done, future in enumerate(as_completed(futures), 1):
            spec, result = futures[future], future.result()
            outcome.ran.append(spec.key)
            if result["status"] == "failed":
                outcome.failed.append(spec.key)
                echo(f"[{done}/{len(todo)}] {spec.key}: FAILED: {result['error']}")
            else:
                final = result.get("final_eval") or {}
                summary = f"eval return {final['return_mean']:.3f}" if final else "no eval"
                echo(f"[{done}/{len(todo)}] {spec.key}: {summary} ({result['wall_time_s']} s)")
    if report:
        from xlstm_rl.suite.report import build_report

        outcome.report = build_report(out)
        echo(f"report: {outcome.report}")
    return outcome
