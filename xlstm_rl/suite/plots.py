"""PNG plots for the suite report (matplotlib, headless).

Learning curves: each seed's per-update mean training return, smoothed by a
trailing mean over ``mmer_window`` updates, interpolated onto a common step grid
(up to the shortest seed's last step); the line is the mean over seeds, the band its
95% t-interval, and each seed's own curve is drawn thin beside it. The y-axis spans the
seeds' curves, not the bands: with two or three seeds a t-interval is wide (its quantile
is 12.7 for two), and a band far past every seed would flatten the curves themselves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xlstm_rl.suite.spec import SuiteSpec


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """out[i] = mean(values[max(0, i - window + 1) : i + 1])."""
    cumsum = np.concatenate([[0.0], np.cumsum(values)])
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(idx - window, 0)
    return (cumsum[idx] - cumsum[start]) / (idx - start)


def seed_band(curves: list[list[tuple[int, float]]], window: int):
    """(steps, mean, half-width, per-seed values (seeds, steps)) over seeds on a common
    grid; None without data."""
    from xlstm_rl.suite.report import t_quantile

    curves = [c for c in curves if len(c) >= 1]
    if not curves:
        return None
    end = min(c[-1][0] for c in curves)
    grid = np.array(sorted({s for c in curves for s, _ in c if s <= end}), dtype=float)
    values = []
    for curve in curves:
        steps = np.array([s for s, _ in curve], dtype=float)
        smooth = trailing_mean(np.array([v for _, v in curve], dtype=float), window)
        values.append(np.interp(grid, steps, smooth))
    values = np.stack(values)  # (seeds, grid)
    mean = values.mean(0)
    n = len(values)
    half = t_quantile(n - 1) * values.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(mean)
    return grid, mean, half, values


def plot_curves(
    report_dir: Path, suite: SuiteSpec, runs, env: str, floor: float | None = None
) -> Path:
    """Training return per core (seed mean, 95% band); ``floor``: the random policy's return."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4))
    low, high = np.inf, -np.inf  # the seeds' curves (and the floor): the y-axis spans them
    for core in suite.cores:
        band = seed_band(
            [r.curve for r in runs if r.env == env and r.core == core and r.ok], suite.mmer_window
        )
        if band is None:
            continue
        steps, mean, half, seeds = band
        (line,) = ax.plot(steps, mean, label=core, linewidth=1.8)
        color = line.get_color()
        ax.fill_between(steps, mean - half, mean + half, color=color, alpha=0.1, linewidth=0)
        if len(seeds) > 1:
            for values in seeds:
                ax.plot(steps, values, color=color, linewidth=0.6, alpha=0.35)
        low, high = min(low, np.nanmin(seeds)), max(high, np.nanmax(seeds))
    ax.set(title=f"{suite.name}: {env}", xlabel="env steps", ylabel="training return")
    if ax.lines and floor is not None:
        ax.axhline(floor, color="gray", linestyle=":", linewidth=1, label="random policy")
        low, high = min(low, floor), max(high, floor)
    if np.isfinite(low) and np.isfinite(high):
        margin = 0.05 * (high - low) or 0.05 * max(abs(high), 1.0)
        ax.set_ylim(low - margin, high + margin)
    if ax.lines:  # outside the axes: the curves fill them
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.text(0.5, 0.5, "no finished runs with episodes", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    path = report_dir / f"curves_{env}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_summary(report_dir: Path, suite: SuiteSpec, rows: list[dict]) -> Path:
    """Grouped bars: final eval return per env (groups) and core (bars), 95% t-intervals."""
    plt = _pyplot()
    envs, cores = [e.name for e in suite.envs], suite.cores
    width = 0.8 / len(cores)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(envs) * max(1, len(cores) / 4)), 4))
    for i, core in enumerate(cores):
        cells = [next(r for r in rows if r["env"] == e and r["core"] == core) for e in envs]
        means = np.nan_to_num([c["eval_return_mean"] for c in cells])
        halves = np.nan_to_num([c["eval_return_ci95"] for c in cells])
        x = np.arange(len(envs)) + (i - (len(cores) - 1) / 2) * width
        ax.bar(x, means, width, yerr=halves, capsize=2, label=core)
    ax.set_xticks(np.arange(len(envs)), envs, rotation=30, ha="right", fontsize="small")
    ax.set(title=f"{suite.name}: final eval return (95% t-interval)", ylabel="eval return")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.legend(fontsize="small", ncol=min(len(cores), 4))
    fig.tight_layout()
    path = report_dir / "summary.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_horizon(report_dir: Path, suite: SuiteSpec, rows: list[dict]) -> Path:
    """Eval success (or return) against the horizon kwarg, one line per core."""
    plt = _pyplot()
    metric = suite.solve["metric"]
    column = "eval_success_mean" if metric == "success_rate" else "eval_return_mean"
    fig, ax = plt.subplots(figsize=(6, 4))
    for core in suite.cores:
        points = sorted(
            (suite.env_entry(r["env"]).kwargs[suite.horizon], r[column])
            for r in rows
            if r["core"] == core
        )
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=core)
    ax.axhline(float(suite.solve["threshold"]), color="black", linestyle="--", linewidth=0.8)
    ax.set_xscale("log")
    ax.set(title=f"{suite.name}: eval {metric}", xlabel=suite.horizon, ylabel=metric)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path = report_dir / "horizon.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
