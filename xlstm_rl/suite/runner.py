"""Run a suite: every (env, core, seed) of the matrix as an ordinary training run.

Each run is a subprocess (``python -m xlstm_rl.suite RUN_DIR``), so a run that
crashes, even hard (a segfault, the OOM killer), is recorded as failed and the
others go on; up to ``workers`` run at once. The layout under ``out``::

    suite.yaml                      the suite file, as run (``report`` reads it)
    runs/<env>/<core>/seed<k>/
        config.yaml                 the run's full TrainConfig (``train --config`` reads it)
        suite_run.json              which suite, env, core and seed the run is
        train/                      TensorBoard events and checkpoint.pt
        log.txt                     the worker's stdout and stderr
        curve.csv                   step, episodic return/length/success per update
        result.json                 status, error, final evaluation, MMER (written last)
    report/                         see ``xlstm_rl.suite.report``

A run is finished when its ``result.json`` exists: a rerun skips it (``retry_failed``
reruns failed ones), and a run interrupted mid-training resumes from its checkpoint.
Before anything is written, a rerun checks that the settings of every run already
under ``out`` (finished, failed or resuming) are those the suite would give it now, and
makes one env per env config of the matrix, so a changed suite or a bad env id or
kwarg stops the suite at once rather than hours into it.
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

from xlstm_rl.config import ConfigError, config_diff, load_config
from xlstm_rl.suite.spec import RunSpec, SuiteSpec, load_suite
from xlstm_rl.suite.worker import SUITE_RUN, write_json

LOG_TAIL_CHARS = 4000
# where a run lies and how fast it goes, not what it learns: free to differ on a rerun
NOT_COMPARED = ("log_dir", "name", "device", "compile", "torch_threads", "checkpoint_every")
LISTED = 5  # run keys named per group in an error, the rest counted


@dataclass
class SuiteOutcome:
    """What ``run_suite`` did: run keys by what happened to them, and the report path.

    ``failed`` holds every run of the selected matrix whose result is a failure, those
    that failed in an earlier call and were skipped now included.
    """

    out: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    report: Path | None = None


def read_result(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "result.json"
    return json.loads(path.read_text()) if path.is_file() else None


def run_config(spec: RunSpec, suite: SuiteSpec, out: Path) -> tuple[dict[str, Any], dict]:
    """What the run's config.yaml holds (its full TrainConfig, defaults filled in, as
    ``xlstm-rl train --config`` reads it) and what its suite_run.json holds."""
    config = load_config(dict(spec.config, log_dir=str(spec.run_dir(out)), name="train"))
    meta = {
        "suite": suite.name,
        "env": spec.env,
        "core": spec.core,
        "seed": spec.seed,
        "mmer_window": suite.mmer_window,
    }
    return config.to_dict(), meta


def recorded_config(run_dir: Path) -> tuple[str, dict[str, Any]] | None:
    """(state, config) of a run that trained under ``run_dir``: finished or failed with
    the config in its result, or in progress (a checkpoint to resume from, config.yaml);
    None for a run that never got as far as a checkpoint, as it starts afresh."""
    result = read_result(run_dir)
    if result is None and not (run_dir / "train" / "checkpoint.pt").is_file():
        return None
    state = "in progress" if result is None else result.get("status", "finished")
    state = "finished" if state == "ok" else state
    if result is not None and isinstance(result.get("config"), dict):
        return state, result["config"]
    path = run_dir / "config.yaml"
    if not path.is_file():  # a runner-recorded crash keeps its config only in config.yaml
        return None
    return state, yaml.safe_load(path.read_text()) or {}


def _training_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The config as the run trains with it, defaults filled in."""
    data = {k: v for k, v in config.items() if k != "suite_run"}
    try:
        return load_config(data).to_dict()
    except ConfigError:  # a config this version cannot read: compare what was written
        return data


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every training setting that differs between two configs."""
    diff = config_diff(_training_settings(old), _training_settings(new))
    return [f"{key}: {a!r} -> {b!r}" for key, (a, b) in diff.items() if key not in NOT_COMPARED]


def check_unchanged(runs: list[RunSpec], suite: SuiteSpec, out: Path, retry_failed: bool) -> None:
    """ConfigError if a run under ``out`` would now get settings it did not train with.

    ``runs`` (the selected matrix, command-line overrides applied) are compared with
    what each recorded; a failed run that ``retry_failed`` reruns from scratch is
    exempt. The other recorded runs of the suite are compared through the suite file
    itself (old ``suite.yaml`` against the new suite, no overrides), since ``suite.yaml``
    is about to be replaced and the report reads it.
    """
    changed: dict[tuple[str, ...], list[str]] = {}  # the same changes, the runs they hit
    selected = {spec.key for spec in runs}

    def compare(spec: RunSpec, old: dict[str, Any], new: dict[str, Any], state: str) -> None:
        changes = config_changes(old, new)
        if changes:
            changed.setdefault(tuple(changes), []).append(f"{spec.key} ({state})")

    for spec in runs:
        recorded = recorded_config(spec.run_dir(out))
        if recorded is not None and not (retry_failed and recorded[0] == "failed"):
            compare(spec, recorded[1], spec.config, recorded[0])
    if (out / "suite.yaml").is_file():
        try:
            old_suite = load_suite(out / "suite.yaml")
            old_runs = {spec.key: spec for spec in old_suite.runs()}
        except ConfigError as e:
            raise ConfigError(f"suite: cannot read the suite already in {out}: {e}") from None
        for spec in suite.runs():
            recorded = recorded_config(spec.run_dir(out))
            if spec.key in selected or spec.key not in old_runs or recorded is None:
                continue
            compare(spec, old_runs[spec.key].config, spec.config, recorded[0])
    if not changed:
        return
    lines = []
    for changes, keys in changed.items():
        named = ", ".join(keys[:LISTED]) + (
            f" and {len(keys) - LISTED} more" if keys[LISTED:] else ""
        )
        lines.append(f"  {len(keys)} run(s): {named}")
        lines += [f"    {change}" for change in changes]
    raise ConfigError(
        f"suite: {out} holds runs made with other settings than this suite now gives "
        "them (old -> new):\n" + "\n".join(lines) + "\nNothing was run or written. Use a "
        "new --out for the changed suite, or delete those runs' folders to run them again "
        "with the new settings."
    )


def check_envs(runs: list[RunSpec]) -> None:
    """Make and close one env per distinct env config of ``runs``, so that a wrong id,
    module, kwarg or action list stops the suite before any run starts, with make_env's
    message."""
    seen = set()
    for spec in runs:
        env = load_config(spec.config).env
        key = json.dumps([env.id, env.module, env.actions, env.kwargs], sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        try:
            made = env.make()
        except Exception as e:  # id, module, kwarg or the env's own check: all one message
            raise ConfigError(f"suite: env {spec.env!r} cannot be made: {e}") from e
        made.close()


def _prepare(spec: RunSpec, suite: SuiteSpec, out: Path, fresh: bool) -> None:
    """Write the run's config; ``fresh``: a failed run being retried starts afresh."""
    run_dir = spec.run_dir(out)
    if fresh:
        (run_dir / "result.json").unlink()
        shutil.rmtree(run_dir / "train", ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    config, meta = run_config(spec, suite, out)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    write_json(run_dir / SUITE_RUN, meta)


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
            **json.loads((run_dir / SUITE_RUN).read_text()),
            "status": "failed",
            "error": f"worker exited with code {code} and no result: {last}",
            "traceback": tail,
            "final_eval": {},
            "wall_time_s": round(time.perf_counter() - start, 1),
        }
        write_json(run_dir / "result.json", result)
    return result


def _write_suite_file(suite: SuiteSpec, source: Path | None, out: Path) -> None:
    target = out / "suite.yaml"
    if source is None:
        target.write_text(yaml.safe_dump(dataclasses.asdict(suite), sort_keys=False))
    elif not (target.is_file() and os.path.samefile(source, target)):
        shutil.copyfile(source, target)


def _not_in_matrix(suite: SuiteSpec, out: Path) -> list[str]:
    """Keys of the runs with a result under ``out`` that the suite's matrix lacks."""
    keys = {spec.key for spec in suite.runs()}
    found = (
        "/".join(p.parent.relative_to(out / "runs").parts)
        for p in out.glob("runs/*/*/*/result.json")
    )
    return sorted(key for key in found if key not in keys)


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
    Every run's config and env are checked before anything is written, and so are the
    settings of runs already under ``out`` (see ``check_unchanged``).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    source = None
    if not isinstance(suite, SuiteSpec):
        source = Path(suite)
        suite = load_suite(source)
    # a bad name, key, value, env or changed setting fails before anything is written
    runs = suite.subset(envs, cores, seeds).runs(overrides)
    out = Path(out) if out is not None else Path("runs/suites") / suite.name
    check_unchanged(runs, suite, out, retry_failed)
    check_envs(runs)
    out.mkdir(parents=True, exist_ok=True)
    _write_suite_file(suite, source, out)

    outcome = SuiteOutcome(out=out)
    todo = []
    for spec in runs:
        result = read_result(spec.run_dir(out))
        failed = result is not None and result.get("status") == "failed"
        if result is None or (retry_failed and failed):  # not finished, or to be retried
            _prepare(spec, suite, out, fresh=result is not None)
            todo.append(spec)
        else:
            outcome.skipped.append(spec.key)
            if failed:
                outcome.failed.append(spec.key)
    failed_before = f" ({len(outcome.failed)} failed)" if outcome.failed else ""
    echo(
        f"suite {suite.name}: {len(todo)} runs to do, {len(outcome.skipped)} finished"
        f"{failed_before}, in {out}"
    )
    outside = _not_in_matrix(suite, out)
    if outside:
        echo(f"not in this suite's matrix, so left out of its report: {', '.join(outside)}")
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
    if outcome.failed:
        retry = "" if retry_failed else "; --retry-failed reruns them"
        echo(
            f"suite {suite.name}: {len(outcome.failed)} of {len(runs)} runs failed "
            f"({', '.join(sorted(outcome.failed))}){retry}"
        )
    else:
        echo(f"suite {suite.name}: {len(runs)} runs, none failed")
    if report:
        from xlstm_rl.suite.report import build_report

        outcome.report = build_report(out)
        echo(f"report: {outcome.report}")
    return outcome
