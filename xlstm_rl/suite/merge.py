"""Gather finished runs from several suite output dirs into one: ``merge_runs(into, sources)``.

A suite's matrix is often run a piece at a time, on more than one machine or into more
than one ``--out``; the report wants them in one place. ``merge_runs`` copies each
finished run's record (``RECORD_FILES``: its result, curve, config and place in the
matrix, not its checkpoint or TensorBoard events) into ``into/runs/...``, where
``build_report`` reads it like a run made there; the config's ``log_dir`` is made the
run's new folder (as ``into`` was given: a relative ``into`` keeps the copy free of the
machine's paths). The copy is also how a report's runs are kept next to it (a few kB a
run) so that runs made later can join the same report.

Nothing is copied unless every run can be: a run must be in the matrix of ``into``'s
suite file (taken from the first source where ``into`` has none), must have trained with
the settings that suite gives it (as ``xlstm-rl suite`` checks before a rerun: where and
how fast it ran may differ), and must not be in ``into`` already with another result.
Runs without a result (not finished) are left out and counted.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xlstm_rl.config import ConfigError
from xlstm_rl.suite.runner import LISTED, config_changes, recorded_config
from xlstm_rl.suite.spec import SuiteSpec, load_suite
from xlstm_rl.suite.worker import SUITE_RUN, write_json

# result.json last: a run is finished when its result exists
RECORD_FILES = ("config.yaml", SUITE_RUN, "curve.csv", "result.json")


@dataclass
class MergeOutcome:
    """Run keys by what ``merge_runs`` did with them."""

    copied: list[str] = field(default_factory=list)
    already_there: list[str] = field(default_factory=list)  # the same result in ``into``
    unfinished: list[str] = field(default_factory=list)  # "<key> (in <source>)": left out


def _suite_of(out: Path) -> SuiteSpec:
    if not (out / "suite.yaml").is_file():
        raise FileNotFoundError(f"{out} has no suite.yaml: not a suite output directory")
    try:
        return load_suite(out / "suite.yaml")
    except ConfigError as e:
        raise ConfigError(f"merge: cannot read the suite in {out}: {e}") from None


def _result(path: Path) -> dict[str, Any]:
    """A run's result as merging compares it: where its folder was is no difference."""
    result = json.loads(path.read_text())
    if isinstance(result.get("config"), dict):
        result["config"] = {k: v for k, v in result["config"].items() if k != "log_dir"}
    return result


def _named(keys: list[str]) -> str:
    return ", ".join(keys[:LISTED]) + (f" and {len(keys) - LISTED} more" if keys[LISTED:] else "")


_OVERRIDES_HINT = (
    " Runs made with command-line overrides (--core.options ..., say) differ from their "
    "own suite.yaml, which does not record them: write OUT/suite.yaml first with the "
    "overrides stated in it (core_overrides or base), then merge."
)


def merge_runs(into: str | os.PathLike, sources: list[str | os.PathLike]) -> MergeOutcome:
    """Copy the finished runs of each suite output dir in ``sources`` into ``into``.

    ``into`` is created if need be, with the first source's ``suite.yaml``. Raises
    ConfigError, before anything is written, if any run cannot join ``into`` (not in its
    suite's matrix, other settings, or another result already there).
    """
    into = Path(into)
    sources = [Path(s) for s in sources]
    if not sources:
        raise ValueError("merge: no source directories given")
    suites = [_suite_of(s) for s in sources]
    for source in sources:
        if into.exists() and source.exists() and os.path.samefile(source, into):
            raise ValueError(f"merge: {source} is the directory being merged into")
    suite_file = into / "suite.yaml" if (into / "suite.yaml").is_file() else None
    suite = _suite_of(into) if suite_file else suites[0]
    specs = {spec.key: spec for spec in suite.runs()}

    outcome = MergeOutcome()
    to_copy: dict[str, Path] = {}  # run key -> the run's dir in its source
    problems: dict[tuple[str, Path], list[str]] = {}  # (what is wrong, source) -> run keys
    for source in sources:
        for run_dir in sorted(p for p in source.glob("runs/*/*/*") if p.is_dir()):
            key = "/".join(run_dir.relative_to(source / "runs").parts)
            if not (run_dir / "result.json").is_file():
                outcome.unfinished.append(f"{key} (in {source})")
                continue
            recorded = recorded_config(run_dir) if key in specs else None
            earlier = to_copy.get(key, into / "runs" / key) / "result.json"
            if key not in specs:
                what = "not in the suite's matrix"
            elif recorded is None:
                what = "no config recorded"
            elif changes := config_changes(recorded[1], specs[key].config):
                what = "other settings (run -> suite): " + "; ".join(changes)
            elif not earlier.is_file():
                to_copy[key] = run_dir
                continue
            elif _result(earlier) == _result(run_dir / "result.json"):
                outcome.already_there.append(key)
                continue
            else:
                what = f"another result for the same run is in {earlier.parents[4]}"
            problems.setdefault((what, source), []).append(key)
    if problems:
        lines = [
            f"  {len(keys)} run(s) in {source}: {_named(keys)}\n    {what}"
            for (what, source), keys in problems.items()
        ]
        raise ConfigError(
            f"merge: runs that cannot join {into} (suite {suite.name!r}"
            + (f" from {suite_file}" if suite_file else "")
            + "):\n"
            + "\n".join(lines)
            + "\nNothing was copied."
            + (_OVERRIDES_HINT if any(w.startswith("other settings") for w, _ in problems) else "")
        )

    into.mkdir(parents=True, exist_ok=True)
    if suite_file is None:
        shutil.copyfile(sources[0] / "suite.yaml", into / "suite.yaml")
    for key, run_dir in to_copy.items():
        target = into / "runs" / key
        target.mkdir(parents=True, exist_ok=True)
        for name in (SUITE_RUN, "curve.csv"):
            if (run_dir / name).is_file():
                shutil.copyfile(run_dir / name, target / name)
        if (run_dir / "config.yaml").is_file():
            config = yaml.safe_load((run_dir / "config.yaml").read_text())
            config["log_dir"] = str(target)
            (target / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        result = json.loads((run_dir / "result.json").read_text())
        if isinstance(result.get("config"), dict):
            result["config"]["log_dir"] = str(target)
        write_json(target / "result.json", result)
        outcome.copied.append(key)
    return outcome
