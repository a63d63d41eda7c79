"""The random-policy floor of every environment of a suite.

Uniformly random actions on held-out seeds 1,000,000 onward (a run with seed s
evaluates on seeds from 1,000,000 + s, so they overlap), the same success rule as
``xlstm-rl evaluate``.
Suite reports compute the same numbers for envs with finished runs; this prints
them for a whole suite without running it.

    python scripts/random_floor.py configs/suites/popgym_easy.yaml [--episodes 200]
"""

from __future__ import annotations

import argparse

from xlstm_rl.agents.evaluation import evaluate_random
from xlstm_rl.config import load_config
from xlstm_rl.suite import load_suite
from xlstm_rl.suite.report import RANDOM_EPISODES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("suite", help="suite YAML")
    parser.add_argument("--episodes", type=int, default=RANDOM_EPISODES)
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    suite = load_suite(args.suite)
    # each env as its runs make it: base, then the env's kwargs and overrides
    runs = suite.runs()
    print(f"random policy, {args.episodes} episodes per env, suite {suite.name}")
    print("| env | random return (mean ± std) | random success | mean length |")
    print("| --- | ---: | ---: | ---: |")
    for env in suite.envs:
        made = load_config(next(r for r in runs if r.env == env.name).config).env
        floor = evaluate_random(
            made.id,
            args.episodes,
            env_module=made.module,
            env_kwargs=made.kwargs,
            actions=made.actions,
        )
        print(
            f"| {env.name} | {floor['return_mean']:.3f} ± {floor['return_std']:.3f} "
            f"| {floor['success_rate']:.3f} | {floor['length_mean']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
