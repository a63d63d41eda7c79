"""The suite report, rebuilt from finished runs: ``build_report(out)``.

Writes ``out/report/``: ``report.md`` (tables), ``summary.csv`` (one row per env and
core), ``random_floor.json`` (a random policy's evaluation per env), ``curves_<env>.png``
(learning curves) and ``summary.png`` (bars of the final evaluation), plus
``horizon.png`` for suites with a ``horizon``.

Statistics are over seeds: the mean and a 95% Student-t interval,
mean +- t(0.975, n - 1) * sd / sqrt(n), with sd the sample standard deviation;
with one seed there is no interval. Failed runs are listed with their errors and
left out of the statistics.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlstm_rl.config import ConfigError
from xlstm_rl.suite.runner import config_changes, read_result
from xlstm_rl.suite.spec import SuiteSpec, load_suite
from xlstm_rl.suite.worker import rolling_max_mean, write_csv

# two-sided 95% quantiles of Student's t, df = 1..30
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip
SUMMARY_COLUMNS = (
    "env", "core", "seeds_ok", "seeds_failed",
    "eval_return_mean", "eval_return_ci95",
    "eval_success_mean", "eval_success_ci95",
    "mmer_mean", "mmer_ci95", "env_steps", "wall_time_s_mean",
    "cpu_time_s_mean",
    "train_solved_seeds", "train_steps_to_solve_mean", "mmer_seeds", "solve_logged_seeds",
)  # fmt: skip

RUN_COLUMNS = (
    "env", "core", "seed", "status", "eval_return", "eval_success", "mmer",
    "train_steps_to_solve", "env_steps", "wall_time_s", "cpu_time_s", "error", "solve_logged",
)  # fmt: skip


def t_quantile(df: int) -> float:
    if df < 1:
        return float("nan")
    if df <= len(T_975):
        return T_975[df - 1]
    z = 1.959964  # Cornish-Fisher expansion around the normal quantile
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_ci(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval); nan where it is undefined."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n == 1:
        return mean, float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t_quantile(n - 1) * sd / math.sqrt(n)


def fmt(mean: float, half: float = math.nan, digits: int = 3) -> str:
    """``mean ± half``; the mean alone without a half-width; "-" without a mean."""
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" if math.isnan(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


@dataclass
class Run:
    env: str
    core: str
    seed: int
    result: dict[str, Any]
    curve: list[tuple[int, float]]  # (step, mean episodic return of the update)
    success: list[tuple[int, float]] = dataclasses.field(default_factory=list)  # same steps

    @property
    def key(self) -> str:
        """``env/core/seed<k>``, as ``RunSpec.key`` names the same run."""
        return f"{self.env}/{self.core}/seed{self.seed}"

    @property
    def ok(self) -> bool:
        return self.result.get("status") == "ok"

    def mmer(self, window: int) -> float:
        """POPGym's MMER of this run's training curve."""
        return rolling_max_mean([v for _, v in self.curve], window)

    def final(self, key: str) -> float:
        value = (self.result.get("final_eval") or {}).get(key)
        return float("nan") if value is None else float(value)


def read_curves(path: Path, columns: tuple[str, ...]) -> list[list[tuple[int, float]]]:
    """Per column, (step, value) per update from curve.csv, read once; updates without a
    value in that column are left out of it."""
    if not path.is_file():
        return [[] for _ in columns]
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return [[(int(r["step"]), float(r[c])) for r in rows if r.get(c)] for c in columns]


def steps_to_solve(curve: list[tuple[int, float]], window: int, threshold: float) -> int | None:
    """The env step at which the mean of the last ``window`` updates first reaches ``threshold``.

    None if it never does (or the run logged fewer than ``window`` updates).
    """
    for end in range(window, len(curve) + 1):
        if sum(v for _, v in curve[end - window : end]) / window >= threshold:
            return curve[end - 1][0]
    return None


def collect_runs(out: Path, suite: SuiteSpec) -> list[Run]:
    """Every finished run of the suite's matrix under ``out`` (unfinished ones are absent)."""
    runs = []
    for env in suite.envs:
        for core in suite.cores:
            for seed in suite.seeds:
                run_dir = out / "runs" / env.name / core / f"seed{seed}"
                result = read_result(run_dir)
                if result is not None:
                    curves = read_curves(run_dir / "curve.csv", ("episodic_return", "success_rate"))
                    runs.append(Run(env.name, core, seed, result, *curves))
    return runs


def aggregate(
    runs: list[Run], suite: SuiteSpec, per_run: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """One row per (env, core): seed means and 95% t-intervals of eval return, success, MMER,
    from the runs' own measures (``per_run``: ``run_rows(runs, suite)``, computed if None)."""
    per_run = run_rows(runs, suite) if per_run is None else per_run
    rows = []
    for env in suite.envs:
        for core in suite.cores:
            group = [r for r in per_run if r["env"] == env.name and r["core"] == core]
            ok = [r for r in group if r["status"] == "ok"]
            mmer = [r["mmer"] for r in ok]  # nan: no episode ended in training
            ret, ret_ci = mean_ci([r["eval_return"] for r in ok])
            succ, succ_ci = mean_ci([r["eval_success"] for r in ok])
            mm, mm_ci = mean_ci(mmer)
            wall, _ = mean_ci([r["wall_time_s"] for r in ok])
            cpus = [r["cpu_time_s"] for r in ok]
            # over every seed or none: a mean of the few runs that recorded it misleads
            cpu = float("nan") if any(map(math.isnan, cpus)) else mean_ci(cpus)[0]
            solved = [
                r["train_steps_to_solve"] for r in ok if r["train_steps_to_solve"] is not None
            ]
            rows.append(dict(zip(SUMMARY_COLUMNS, (
                env.name, core, len(ok), len(group) - len(ok),
                ret, ret_ci, succ, succ_ci, mm, mm_ci, steps_label([r["env_steps"] for r in ok]),
                wall, cpu, len(solved), mean_ci(solved)[0], sum(not math.isnan(m) for m in mmer),
                sum(r["solve_logged"] for r in ok),
            ))))  # fmt: skip
    return rows


def run_rows(runs: list[Run], suite: SuiteSpec) -> list[dict[str, Any]]:
    """One row per finished run (failed ones included), in the suite's matrix order: its
    eval return and success, MMER, steps to solve (None: never, or not logged: see
    ``solve_logged``), env steps and times."""
    rows = []
    for run in runs:
        rows.append(dict(zip(RUN_COLUMNS, (
            run.env, run.core, run.seed, run.result.get("status"),
            run.final("return_mean"), run.final("success_rate"),
            run.mmer(suite.mmer_window) if run.ok else float("nan"),
            solve_steps(run, suite) if run.ok else None,
            run.result.get("global_step"),
            run_seconds(run.result, "train_time_s", "wall_time_s"),
            run_seconds(run.result, "cpu_time_s"),
            run.result.get("error"),
            run.ok and bool(_solve_curve(run, suite)),
        ))))  # fmt: skip
    return rows


def run_seconds(result: dict[str, Any], *keys: str) -> float:
    """The first of ``keys`` that the run's result has a number for; nan if none.

    Runs record ``train_time_s`` and ``cpu_time_s``, their training time summed over
    resumes; results written before they existed have only ``wall_time_s`` (the
    worker's own, the last session's time for a resumed run)."""
    for key in keys:
        value = result.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return float("nan")


def solve_steps(run: Run, suite: SuiteSpec) -> int | None:
    """Env steps until the run's training curve met the suite's solve rule (see report)."""
    return steps_to_solve(
        _solve_curve(run, suite), suite.mmer_window, float(suite.solve["threshold"])
    )


def _solve_curve(run: Run, suite: SuiteSpec) -> list[tuple[int, float]]:
    """The training curve the solve rule reads; empty where the env reported no success
    during training (POPGym's envs report none), so that "never" cannot be told apart
    from "not logged" but by this."""
    return run.success if suite.solve["metric"] == "success_rate" else run.curve


def steps_label(env_steps: list[int | None]) -> str:
    """The env steps runs trained for (None: not recorded): one number, or min-max if they
    differ."""
    steps = sorted({int(n) for n in env_steps if n is not None})
    if not steps:
        return ""
    return str(steps[0]) if len(steps) == 1 else f"{steps[0]}-{steps[-1]}"


def per_core_summary(runs: list[Run], suite: SuiteSpec) -> dict[str, tuple]:
    """Per core: the means over envs of the final eval return and of the MMER, per seed,
    then their t-intervals over seeds: (eval mean, eval half-width, MMER mean, MMER
    half-width, seeds). Only envs with a successful run (of any core) count, and only
    seeds with a successful run on each of them whose eval return and MMER are both
    defined, so both columns are over the same seeds."""
    summary = {}
    ran_envs = {r.env for r in runs if r.ok}
    for core in suite.cores:
        evals, mmers = [], []
        for seed in suite.seeds:
            done = [r for r in runs if r.core == core and r.seed == seed and r.ok]
            if not done or {r.env for r in done} != ran_envs:
                continue
            ev = sum(r.final("return_mean") for r in done) / len(done)
            mm = sum(r.mmer(suite.mmer_window) for r in done) / len(done)
            if not (math.isnan(ev) or math.isnan(mm)):
                evals.append(ev)
                mmers.append(mm)
        summary[core] = (*mean_ci(evals), *mean_ci(mmers), len(evals))
    return summary


def _largest_horizon(rows: list[dict], suite: SuiteSpec, keep) -> dict[str, Any]:
    """Per core: the largest ``suite.horizon`` value among its rows that ``keep`` accepts
    (None if none does)."""
    largest = {}
    for core in suite.cores:
        values = [
            suite.env_entry(row["env"]).kwargs[suite.horizon]
            for row in rows
            if row["core"] == core and keep(row)
        ]
        largest[core] = max(values) if values else None
    return largest


def horizon_headline(rows: list[dict], suite: SuiteSpec) -> dict[str, Any]:
    """Per core: the largest ``suite.horizon`` value whose seed-mean metric meets the threshold."""
    metric, threshold = suite.solve["metric"], float(suite.solve["threshold"])
    column = {"success_rate": "eval_success_mean", "return_mean": "eval_return_mean"}[metric]
    return _largest_horizon(rows, suite, lambda row: row[column] >= threshold)  # nan: False


def horizon_tried(rows: list[dict], suite: SuiteSpec) -> dict[str, Any]:
    """Per core: the largest ``suite.horizon`` value with a finished run (None: none yet)."""
    return _largest_horizon(rows, suite, lambda row: row["seeds_ok"] > 0)


def not_run_yet(rows: list[dict]) -> list[str]:
    """The cores with no run (finished or failed) per env of ``rows``: 'env: core, core',
    or one 'core, core on every environment' when the same cores are missing from all."""
    missing = {}
    for env in dict.fromkeys(row["env"] for row in rows):
        missing[env] = [
            row["core"]
            for row in rows
            if row["env"] == env and not row["seeds_ok"] + row["seeds_failed"]
        ]
    if len(missing) > 1 and len({tuple(cores) for cores in missing.values()}) == 1:
        cores = next(iter(missing.values()))
        return [f"{', '.join(cores)} on every environment"] if cores else []
    return [f"{env}: {', '.join(cores)}" for env, cores in missing.items() if cores]


RANDOM_EPISODES = 200


def random_floors(report_dir: Path, runs: list[Run], suite: SuiteSpec) -> dict[str, dict]:
    """Per env: a uniformly random policy's eval over ``RANDOM_EPISODES`` held-out episodes.

    The env's config (id, kwargs, module, actions) is taken from a finished run, so envs with
    none are left out. Cached in ``random_floor.json`` and recomputed when that config
    changes.
    """
    from xlstm_rl.agents.evaluation import evaluate_random

    path = report_dir / "random_floor.json"
    cached = json.loads(path.read_text()) if path.is_file() else {}
    floors = {}
    for env in suite.envs:
        run = next((r for r in runs if r.env == env.name and r.ok), None)
        if run is None:
            continue
        env_config = run.result["config"]["env"]
        key = {k: env_config.get(k) for k in ("id", "kwargs", "module", "actions")}
        entry = cached.get(env.name)
        if entry is None or entry.get("env") != key or entry["episodes"] != RANDOM_EPISODES:
            entry = evaluate_random(
                key["id"],
                RANDOM_EPISODES,
                env_module=key["module"],
                env_kwargs=key["kwargs"],
                actions=key["actions"],
            )
            entry["env"] = key
        floors[env.name] = entry
    path.write_text(json.dumps(floors, indent=2) + "\n")
    return floors


def settings_beyond_suite(runs: list[Run], suite: SuiteSpec) -> list[tuple[list[str], list[Run]]]:
    """Runs that trained with settings other than the suite file gives them (a command-line
    override such as ``--total_steps`` or ``--core.options``, which ``suite.yaml`` does not
    record), grouped by the same changes: ``(["key: suite file -> run", ...], runs)``.
    Read from each run's recorded config, so it holds for runs merged in from elsewhere."""
    try:
        specs = {spec.key: spec for spec in suite.runs()}
    except ConfigError:  # a suite file this version cannot expand: nothing to compare with
        return []
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        config = run.result.get("config")
        spec = specs.get(run.key)
        if isinstance(config, dict) and spec is not None:
            changes = config_changes(spec.config, config)
            if changes:
                groups.setdefault(tuple(changes), []).append(run)
    return [(list(changes), group) for changes, group in groups.items()]


def _which_runs(group: list[Run], suite: SuiteSpec) -> str:
    """``3 runs (core gru; env X; every seed)``: the group's cores, envs and seeds, each
    axis named in full or as "every" where the group covers the suite's whole axis, and
    ", not every combination" where the group is not the product of the three."""

    def axis(kind: str, values: list, every: list) -> str:
        if len(values) == len(every) > 1:
            return f"every {kind}"
        return f"{kind}{'s' if len(values) > 1 else ''} {', '.join(map(str, values))}"

    envs = [e.name for e in suite.envs if any(r.env == e.name for r in group)]
    cores = [c for c in suite.cores if any(r.core == c for r in group)]
    seeds = [s for s in suite.seeds if any(r.seed == s for r in group)]
    named = [
        axis("core", cores, suite.cores),
        axis("env", envs, [e.name for e in suite.envs]),
        axis("seed", seeds, suite.seeds),
    ]
    count = f"{len(group)} run{'s' if len(group) > 1 else ''}"
    whole = len(group) == len(envs) * len(cores) * len(seeds)
    return f"{count} ({'; '.join(named)}{'' if whole else ', not every combination'})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def render_markdown(
    suite: SuiteSpec,
    runs: list[Run],
    rows: list[dict],
    plots: list[str],
    floors: dict[str, dict] | None = None,
    per_run: list[dict[str, Any]] | None = None,
) -> str:
    """report.md; ``rows`` from ``aggregate``, ``per_run`` from ``run_rows`` (computed if
    None)."""
    per_run = run_rows(runs, suite) if per_run is None else per_run
    expected = len(suite.envs) * len(suite.cores) * len(suite.seeds)
    failed = [r for r in runs if not r.ok]
    budget = suite.base.get("total_steps")
    budget = f"{budget} env steps per run" if budget else "set per env"
    trained = steps_label([r.result.get("global_step") for r in runs if r.ok])
    trained = (
        f"the finished runs trained for {trained} env steps (the *env steps* column; a "
        "command-line override sets it)."
        if trained
        else "no run has finished without failing yet."
    )
    ran_envs = {r.env for r in runs}
    ran_cores = {r.core for r in runs}
    not_run = [e.name for e in suite.envs if e.name not in ran_envs]
    missing = not_run_yet([row for row in rows if row["env"] in ran_envs])
    lines = [
        f"# Suite `{suite.name}`",
        "",
        suite.description.strip(),
        "",
        f"Runs finished: {len(runs)} of {expected} ({len(failed)} failed). Seeds: "
        f"{', '.join(map(str, suite.seeds))}. Budget in the suite file: {budget} (env "
        f"overrides may change it); {trained}"
        + (f" Environments with no finished run yet: {', '.join(not_run)}." if not_run else ""),
        "",
        "Each cell is the mean over seeds ± the half-width of a 95% Student-t interval "
        "(no interval with one seed). *Eval* is the final evaluation on held-out seeds "
        "(deterministic actions). *MMER* is POPGym's max-mean episodic return: the "
        f"maximum over training of the mean training return over {suite.mmer_window} "
        "consecutive updates. *Steps to solve*: the env step at which the training "
        f"{suite.solve['metric']} averaged over {suite.mmer_window} consecutive updates "
        f"first reached {suite.solve['threshold']}, mean over the seeds that reached it "
        "(their count in brackets, out of the seeds that logged it; *-*: no run logged it, "
        "as where the env reports no success during training). *Wall s* and *CPU s*: "
        "seconds of training per run (the update loop, summed over resumes; mean over "
        "seeds), by the clock and in the training process's CPU time, which other jobs "
        "sharing the machine inflate far less than the wall clock.",
        "",
    ]
    beyond = settings_beyond_suite(runs, suite)
    if beyond:
        lines += ["## Settings other than the suite file's", ""]
        lines += [
            "These runs trained with settings the suite file does not give them "
            "(command-line overrides, which `suite.yaml` does not record; from each run's "
            "own config): setting: the suite file's value -> the run's.",
            "",
        ]
        for changes, group in beyond:
            lines.append(f"- {_which_runs(group, suite)}:")
            lines += [f"  - `{change}`" for change in changes]
        lines.append("")
    lines += ["## Results per environment and core", ""]
    table = [
        [
            row["env"], row["core"], f"{row['seeds_ok']}/{row['seeds_ok'] + row['seeds_failed']}",
            fmt(row["eval_return_mean"], row["eval_return_ci95"]),
            fmt(row["eval_success_mean"], row["eval_success_ci95"], 2),
            _mmer_cell(row), _solve_cell(row), row["env_steps"] or "-",
            fmt(row["wall_time_s_mean"], digits=0), fmt(row["cpu_time_s_mean"], digits=0),
        ]
        for row in rows
        if row["seeds_ok"] + row["seeds_failed"]
    ]  # fmt: skip
    header = ["env", "core", "seeds ok", "eval return", "eval success", "MMER"]
    lines += _table([*header, "steps to solve", "env steps", "wall s", "CPU s"], table)
    if missing:
        lines += ["", "Not run yet (left out of the table): " + "; ".join(missing) + "."]
    if floors:
        lines += ["", "## Random-policy floor", ""]
        first = next(iter(floors.values())).get("first_seed")
        seeds = (
            f"held-out env seeds from {first:,} (a run with seed s evaluates on seeds from "
            f"{first:,} + s, so the two sets overlap)"
            if isinstance(first, int)
            else "held-out env seeds"
        )
        lines += [
            f"Uniformly random actions, {RANDOM_EPISODES} episodes on {seeds}: mean "
            "return ± std, success rate.",
            "",
        ]
        lines += _table(
            ["env", "random return", "random success"],
            [
                [name, fmt(f["return_mean"], f["return_std"]), f"{f['success_rate']:.2f}"]
                for name, f in floors.items()
            ],
        )
    summary = per_core_summary(runs, suite)
    lines += ["", "## Per core, mean over environments", ""]
    lines += [
        "Mean final eval return and mean MMER over the environments with successful runs, "
        "per seed, then over seeds (only seeds successful on every such environment count).",
        "",
    ]
    lines += _table(
        ["core", "mean eval return", "mean MMER", "seeds"],
        [
            [core, fmt(m, h), fmt(mm, mh), n]
            for core, (m, h, mm, mh, n) in summary.items()
            if core in ran_cores
        ],
    )
    if suite.horizon:
        metric, threshold = suite.solve["metric"], suite.solve["threshold"]
        headline = horizon_headline(rows, suite)
        tried = horizon_tried(rows, suite)
        lines += ["", f"## Longest {suite.horizon} solved", ""]
        lines += [
            f"A core solves an environment when its seed-mean final eval {metric} is "
            f">= {threshold}. Headline: the largest `{suite.horizon}` solved, beside the "
            "largest with a finished run.",
            "",
        ]
        lines += _table(
            ["core", f"longest {suite.horizon} solved", "longest tried"],
            [
                [core, "none" if v is None else v, tried[core]]
                if tried[core] is not None
                else [core, "no finished run", "-"]
                for core, v in headline.items()
            ],
        )
    if failed:
        lines += ["", "## Failed runs", ""]
        lines += _table(
            ["run", "error"],
            [[r.key, _cell(r.result.get("error"))] for r in failed],
        )
    lines += ["", "## Every run", ""]
    lines += [
        "Per run: the same measures as above (a mean over seeds can hide that some seeds "
        "learned and others did not). Also in `runs.csv`.",
        "",
    ]
    lines += _table(
        ["env", "core", "seed", "eval return", "eval success", "MMER", "steps to solve",
         "env steps", "wall s", "CPU s"],
        [_run_cells(row) for row in per_run],
    )  # fmt: skip
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _run_cells(row: dict) -> list[str]:
    head = [row["env"], row["core"], row["seed"]]
    if row["status"] != "ok":
        return [*head, "failed", "-", "-", "-", "-", fmt(row["wall_time_s"], digits=0), "-"]
    steps = row["train_steps_to_solve"]
    solve = "-" if not row["solve_logged"] else "never" if steps is None else f"{steps:,}"
    return [
        *head, fmt(row["eval_return"]), fmt(row["eval_success"], digits=2), fmt(row["mmer"]), solve,
        "-" if row["env_steps"] is None else row["env_steps"],
        fmt(row["wall_time_s"], digits=0), fmt(row["cpu_time_s"], digits=0),
    ]  # fmt: skip


def _mmer_cell(row: dict) -> str:
    """MMER's mean ± interval, with its n where runs without one (no episode ended during
    training) left it over fewer seeds than the row's."""
    text = fmt(row["mmer_mean"], row["mmer_ci95"])
    if 0 < row["mmer_seeds"] < row["seeds_ok"]:
        text += f" (n={row['mmer_seeds']})"
    return text


def _solve_cell(row: dict) -> str:
    solved, total = row["train_solved_seeds"], row["solve_logged_seeds"]
    if not total:
        return "-"
    if not solved:
        return f"never (0/{total})"
    return f"{row['train_steps_to_solve_mean']:,.0f} ({solved}/{total})"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")[:300]


def build_report(out: str | os.PathLike) -> Path:
    """Rebuild ``out/report/`` from the finished runs under ``out``; returns report.md's path."""
    from xlstm_rl.suite.plots import plot_curves, plot_horizon, plot_summary

    out = Path(out)
    if not (out / "suite.yaml").is_file():
        raise FileNotFoundError(f"{out} has no suite.yaml: not a suite output directory")
    suite = load_suite(out / "suite.yaml")
    runs = collect_runs(out, suite)
    per_run = run_rows(runs, suite)
    rows = aggregate(runs, suite, per_run)
    report_dir = out / "report"
    report_dir.mkdir(exist_ok=True)
    write_csv(report_dir / "summary.csv", rows, SUMMARY_COLUMNS)
    write_csv(report_dir / "runs.csv", per_run, RUN_COLUMNS)
    floors = random_floors(report_dir, runs, suite)
    plots = [
        plot_curves(report_dir, suite, runs, env.name, floors.get(env.name, {}).get("return_mean"))
        for env in suite.envs
        if any(r.env == env.name for r in runs)
    ]
    plots.append(plot_summary(report_dir, suite, rows))
    if suite.horizon:
        plots.append(plot_horizon(report_dir, suite, rows))
    path = report_dir / "report.md"
    path.write_text(render_markdown(suite, runs, rows, [p.name for p in plots], floors, per_run))
    return path
