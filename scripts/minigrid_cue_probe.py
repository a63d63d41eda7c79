"""Does a MiniGrid Memory agent use the cue? Its success split by where episodes start.

In MiniGrid Memory the agent starts in a random column from 1 (the start room's
first) to the end of the hallway (6 in MemoryS9), facing the hallway, and the cue
object sits behind it in column 1. With ``agent_view_size: 3`` the cue is in its
first view only from column 1; from columns 2 and 3 turning round shows it, and from
column 4 on the agent must walk back to see it. So a policy that ignores the cue wins
about half of every group below, one that remembers what it saw first wins the
column-1 episodes, and one that also goes back to look wins the rest.

    python scripts/minigrid_cue_probe.py runs/<name> [--episodes 300] [--sample]

The episodes are the held-out ones of ``xlstm-rl evaluate`` (reset seeds from
1,000,000 + the run's seed, or ``--seed``), acted with the policy's mode unless
``--sample``.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch

from xlstm_rl.agents.checkpoint import CheckpointError, checkpoint_file
from xlstm_rl.agents.evaluation import evaluate_policy, policy_from_checkpoint


def memory_env(config):
    """An env of the run's config; ValueError unless it is a MiniGrid Memory env."""
    env = config.env.make()
    try:
        from minigrid.envs import MemoryEnv
    except ImportError:  # then the run's env cannot be one
        MemoryEnv = ()  # isinstance(x, ()) is False
    if not isinstance(env.unwrapped, MemoryEnv):
        env.close()
        raise ValueError(f"{config.env.id} is not a MiniGrid Memory env (MiniGrid-Memory...)")
    return env


def start_views(env, first_seed: int, episodes: int) -> list[tuple[int, bool]]:
    """(start column, cue in the first view) of each held-out episode: ``env`` reset
    with the evaluation's seeds."""
    memory = env.unwrapped
    cue = (1, memory.height // 2 - 1)  # where MemoryEnv puts the start room's object
    starts = []
    for j in range(episodes):
        env.reset(seed=first_seed + j)
        starts.append((int(memory.agent_pos[0]), bool(memory.in_view(*cue))))
    return starts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a run folder or its checkpoint.pt")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=None, help="default: the run's seed")
    parser.add_argument("--sample", action="store_true", help="sample actions, not the mode")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    torch.set_num_threads(1)
    try:
        policy, config = policy_from_checkpoint(checkpoint_file(args.checkpoint))
        env = memory_env(config)
        result = evaluate_policy(
            policy,
            config,
            args.episodes,
            seed=args.seed,
            deterministic=not args.sample,
            per_episode=True,
        )
        starts = start_views(env, result["first_seed"], args.episodes)
        env.close()
    except (OSError, ValueError, CheckpointError) as e:
        parser.error(str(e))
    groups = defaultdict(list)  # (column, cue in first view) -> successes
    for start, success in zip(starts, result["per_episode"]["successes"]):
        groups[start].append(success)
    acting = "sampled actions" if args.sample else "the policy's mode"
    print(f"{config.env.id}, {args.episodes} held-out episodes, {acting}")
    print("| start column | cue in first view | episodes | success rate |")
    print("| ---: | --- | ---: | ---: |")
    for (column, seen), successes in sorted(groups.items()):
        rate = sum(successes) / len(successes)
        print(f"| {column} | {'yes' if seen else 'no'} | {len(successes)} | {rate:.2f} |")
    for seen in (True, False):
        successes = [s for (_, v), group in groups.items() if v == seen for s in group]
        if successes:
            where = "in the first view" if seen else "not in the first view"
            print(
                f"cue {where}: success {sum(successes) / len(successes):.3f} "
                f"over {len(successes)} episodes"
            )
    print(f"all: success {result['success_rate']:.3f}, return {result['return_mean']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
