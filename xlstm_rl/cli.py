"""The ``xlstm-rl`` command: ``train``, ``evaluate``, ``suite`` and ``report``.

    xlstm-rl train [--config configs/default.yaml] [--resume CHECKPOINT] [--key value ...]
    xlstm-rl evaluate CHECKPOINT [--episodes N] [--seed S] [--stochastic]
                      [--max-episode-steps N] [--json PATH]
    xlstm-rl suite SUITE.yaml [--workers N] [--out DIR] [--retry-failed]
                   [--envs NAME ...] [--cores CORE ...] [--seeds SEED ...] [--key value ...]
    xlstm-rl report DIR [--merge SRC_DIR ...]

Overrides are dotted config keys: ``--ppo.lr 1e-3``, ``--env.kwargs.corridor_length 20``,
``--core.name lstm``. An unknown key or a bad value stops with a message naming it.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from xlstm_rl.agents.checkpoint import CheckpointError
from xlstm_rl.agents.evaluation import MAX_EPISODE_STEPS
from xlstm_rl.config import ConfigError, parse_overrides


def _train(args: argparse.Namespace, extra: list[str]) -> int:
    from xlstm_rl.agents import train

    overrides = parse_overrides(extra)
    if args.config is None and args.resume is None:
        default = Path("configs/default.yaml")
        args.config = default if default.is_file() else None
        if args.config is None:
            print(
                f"no --config given and no {default} here: training with the built-in "
                "defaults (xlstm_rl.config.TrainConfig) plus the overrides",
                file=sys.stderr,
            )
    result = train(args.config, resume=args.resume, overrides=overrides, progress=not args.quiet)
    if result.rank > 0:  # under torchrun, rank 0 reports for all
        return 0
    print(f"run: {result.run_dir}")
    print(f"checkpoint: {result.checkpoint}")
    if result.train_time_s is not None:
        print(
            f"training time: {result.train_time_s:,.1f} s wall clock, "
            f"{result.train_cpu_s:,.1f} s CPU (the update loop, over all resumes)"
        )
    if result.final_eval:
        _print_eval(result.final_eval)
    return 0


def _print_eval(result: dict) -> None:
    print(
        f"eval over {result['episodes']} episodes (seeds from {result['first_seed']}): "
        f"return {result['return_mean']:.3f} +- {result['return_std']:.3f}, "
        f"success rate {result['success_rate']:.2f}, mean length {result['length_mean']:.1f}"
        + (f", {result['cut']} cut at the step cap" if result.get("cut") else "")
    )


def _step_cap(text: str) -> int | str | None:
    """--max-episode-steps: "auto", or an int >= 0 (0: no cap, None)."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 'auto' or an int >= 0 (0: no cap), got {text!r}")
    return value or None


def _evaluate(args: argparse.Namespace, extra: list[str]) -> int:
    from xlstm_rl.agents import evaluate_checkpoint

    if extra:
        raise ConfigError(f"unexpected arguments for evaluate: {' '.join(extra)}")
    result = evaluate_checkpoint(
        args.checkpoint,
        episodes=args.episodes,
        seed=args.seed,
        deterministic=not args.stochastic,
        device=args.device,
        max_episode_steps=args.max_episode_steps,
    )
    _print_eval(result)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _suite(args: argparse.Namespace, extra: list[str]) -> int:
    from xlstm_rl.suite import run_suite

    outcome = run_suite(
        args.suite,
        args.out,
        workers=args.workers,
        overrides=parse_overrides(extra),
        retry_failed=args.retry_failed,
        envs=args.envs,
        cores=args.cores,
        seeds=args.seeds,
    )
    return 1 if outcome.failed else 0


def _report(args: argparse.Namespace, extra: list[str]) -> int:
    from xlstm_rl.suite import build_report

    if extra:
        raise ConfigError(f"unexpected arguments for report: {' '.join(extra)}")
    if args.merge:
        from xlstm_rl.suite.merge import merge_runs

        merged = merge_runs(args.out, args.merge)
        print(
            f"merge: {len(merged.copied)} run(s) copied into {args.out}, "
            f"{len(merged.already_there)} already there, "
            f"{len(merged.unfinished)} unfinished left out"
        )
    print(f"report: {build_report(args.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xlstm-rl", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    # no abbreviations: an override such as --seed must never be read as --seeds
    commands.add_parser = functools.partial(commands.add_parser, allow_abbrev=False)

    train = commands.add_parser(
        "train",
        help="train an agent from a YAML config",
        description="Train an agent. Further --key value pairs override config keys.",
    )
    train.add_argument("--config", type=Path, help="YAML config (default: configs/default.yaml)")
    train.add_argument(
        "--resume", type=Path, help="continue from this checkpoint (file or run folder)"
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(run=_train, on_interrupt="")  # main() says which checkpoint

    evaluate = commands.add_parser("evaluate", help="evaluate a checkpoint on held-out seeds")
    evaluate.add_argument(
        "checkpoint", type=Path, help="checkpoint file, its run folder, or a suite run's folder"
    )
    evaluate.add_argument(
        "--episodes", type=int, help="default: the run's eval_episodes (100 if it had none)"
    )
    evaluate.add_argument("--seed", type=int, help="base seed (default: the run's seed)")
    evaluate.add_argument(
        "--stochastic",
        action="store_true",
        help="sample actions, not the mode (seeded by --seed: repeatable)",
    )
    evaluate.add_argument("--device", default="cpu", help="cpu, cuda[:N] or auto")
    evaluate.add_argument(
        "--max-episode-steps",
        type=_step_cap,
        default="auto",
        help="cut an episode that has not ended after this many steps (0: no cap; default "
        f"auto: {MAX_EPISODE_STEPS:,}, or the env's own step limit where that is longer)",
    )
    evaluate.add_argument("--json", type=Path, help="also write the results here")
    evaluate.set_defaults(run=_evaluate, on_interrupt="nothing was written")

    suite = commands.add_parser(
        "suite",
        help="run a benchmark suite (cores x envs x seeds) and write its report",
        description="Run a suite; finished runs are skipped. Further --key value pairs "
        "override config keys of every run.",
    )
    suite.add_argument("suite", type=Path, help="suite YAML, e.g. configs/suites/smoke.yaml")
    suite.add_argument("--workers", type=int, default=1, help="runs at once (default 1)")
    suite.add_argument("--out", type=Path, help="output dir (default runs/suites/<name>)")
    suite.add_argument("--retry-failed", action="store_true", help="rerun failed runs")
    suite.add_argument("--envs", nargs="+", metavar="NAME", help="run only these envs (names)")
    suite.add_argument("--cores", nargs="+", metavar="CORE", help="run only these cores")
    suite.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="only these seeds")
    suite.set_defaults(
        run=_suite, on_interrupt="run the same command again to go on (finished runs are skipped)"
    )

    report = commands.add_parser("report", help="rebuild a suite's report from finished runs")
    report.add_argument("out", type=Path, help="the suite's output dir")
    report.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="first copy the finished runs of these suite output dirs into OUT (their "
        "results, curves and configs, not checkpoints; OUT is created if need be)",
    )
    report.set_defaults(run=_report, on_interrupt="run it again")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        return args.run(args, extra)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        # Bad configs, unknown env ids or core options, damaged checkpoints: one clear line.
        parser.exit(2, f"xlstm-rl {args.command}: error: {e}\n")
    except FloatingPointError as e:  # training's TrainingDiverged: a NaN/inf loss
        checkpoint = getattr(e, "checkpoint", None)
        then = (
            f"the last checkpoint, from before it: {checkpoint} (resuming repeats the same "
            "steps exactly: change --ppo.lr or --ppo.max_grad_norm, or look for NaN/inf in the "
            "env's observations and rewards)"
            if checkpoint is not None
            else "no checkpoint was written yet"
        )
        parser.exit(1, f"xlstm-rl {args.command}: error: training stopped {e}; {then}\n")
    except KeyboardInterrupt as e:
        # Ctrl-C: checkpoints are written atomically, so the last one is whole; say how
        # to go on rather than print a traceback from wherever the run was
        then = args.on_interrupt
        if args.command == "train":
            checkpoint = getattr(e, "checkpoint", None)
            then = (
                f"resume with: xlstm-rl train --resume {checkpoint}"
                if checkpoint is not None
                else "no checkpoint was written yet (one is written every checkpoint_every updates)"
            )
        parser.exit(130, f"xlstm-rl {args.command}: interrupted; {then}\n")


if __name__ == "__main__":
    sys.exit(main())
