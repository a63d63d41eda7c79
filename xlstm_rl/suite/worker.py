"""One suite run in its own process: ``python -m xlstm_rl.suite RUN_DIR``.

Reads ``RUN_DIR/config.yaml`` (a full TrainConfig whose log dir is RUN_DIR and name
``train``) and ``RUN_DIR/suite_run.json`` (the run's place in its suite), trains,
resuming from ``RUN_DIR/train/checkpoint.pt`` if an earlier attempt left one, and
writes the learning curve (``curve.csv``, read back from the run's TensorBoard events)
and ``result.json``. Any exception is caught and recorded in ``result.json`` as a
failed run; the file is written last, atomically, so its presence means the run is
finished.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

CURVE_TAGS = {
    "episodic_return": "charts/episodic_return",
    "episodic_length": "charts/episodic_length",
    "success_rate": "charts/success_rate",
}
CURVE_COLUMNS = ("step", *CURVE_TAGS)
UPDATE_TAG = "charts/SPS"  # logged once per update, episodes or not


def read_scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} from every TensorBoard event file in ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not log_dir.is_dir():
        return {}
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    available = set(events.Tags().get("scalars", []))
    return {
        tag: {e.step: e.value for e in events.Scalars(tag)}
        for tag in (*CURVE_TAGS.values(), UPDATE_TAG)
        if tag in available
    }


def write_curve(path: Path, scalars: dict[str, dict[int, float]]) -> list[dict[str, Any]]:
    """curve.csv: one row per update that finished episodes (per-update means)."""
    returns = scalars.get(CURVE_TAGS["episodic_return"], {})
    rows = []
    for step in sorted(returns):
        row = {"step": step}
        for column, tag in CURVE_TAGS.items():
            row[column] = scalars.get(tag, {}).get(step, "")
        rows.append(row)
    write_csv(path, rows, CURVE_COLUMNS)
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]], columns) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


SUITE_RUN = "suite_run.json"  # suite, env, core, seed and mmer_window of a run


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def rolling_max_mean(values: list[float], window: int) -> float:
    """POPGym's MMER on our logs: the max over training of the mean over ``window`` updates."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan")
    window = min(window, len(values))
    sums = [sum(values[i : i + window]) / window for i in range(len(values) - window + 1)]
    return max(sums)


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _failure_message(err: BaseException) -> str:
    from xlstm_rl.agents.training import TrainingDiverged

    if isinstance(err, TrainingDiverged):  # its text names the update and global step
        return f"FloatingPointError {err}"
    return f"{type(err).__name__}: {err}"


def run(run_dir: Path) -> dict[str, Any]:
    """Train the run in ``run_dir`` and record its result; never raises for training errors."""
    from xlstm_rl.agents import train
    from xlstm_rl.config import load_config

    data = yaml.safe_load((run_dir / "config.yaml").read_text())
    meta = json.loads((run_dir / SUITE_RUN).read_text())  # the runner writes both files
    config = load_config(data)
    log_dir = run_dir / config.name
    checkpoint = log_dir / "checkpoint.pt"
    result: dict[str, Any] = {**meta, "status": "ok", "error": None, "config": data}
    start = time.perf_counter()
    try:
        if checkpoint.is_file():
            outcome = train(resume=checkpoint, progress=False)
        else:
            outcome = train(config, progress=False)
        result.update(
            final_eval=outcome.final_eval,
            global_step=outcome.global_step,
            # the update loop's time summed over resumes; None: not recorded
            train_time_s=_seconds(outcome.train_time_s),
            cpu_time_s=_seconds(outcome.train_cpu_s),
        )
    except Exception as err:  # recorded, not raised: one bad run must not stop the suite
        result.update(
            status="failed",
            error=_failure_message(err),
            traceback=traceback.format_exc(),
            final_eval={},
        )
    scalars = read_scalars(log_dir)
    rows = write_curve(run_dir / "curve.csv", scalars)
    result["wall_time_s"] = round(time.perf_counter() - start, 1)
    result["updates_logged"] = len(scalars.get(UPDATE_TAG, {}))
    result["mmer"] = rolling_max_mean([r["episodic_return"] for r in rows], meta["mmer_window"])
    write_json(run_dir / "result.json", result)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m xlstm_rl.suite RUN_DIR", file=sys.stderr)
        return 2
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    result = run(Path(argv[0]))
    print(f"{result['status']}: {result.get('error') or result.get('final_eval')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
