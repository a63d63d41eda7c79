"""PPO in plain TorchRL with our mLSTM as the memory of the actor and the critic.

The T-maze shows a cue only at the first step and pays +1 for turning the way it
pointed at the end of the corridor, so the policy must remember it. The pieces are
TorchRL's own: GymEnv + InitTracker + the primers, a Collector, GAE, ClipPPOLoss;
`xlstm_rl.torchrl.MemoryModule` stands where `torchrl.modules.LSTMModule` would.

    python examples/torchrl_ppo.py --iterations 20 --corridor-length 4
"""

from __future__ import annotations

import argparse

import torch
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.collectors import Collector
from torchrl.envs import GymEnv, InitTracker, RewardSum, SerialEnv, TransformedEnv
from torchrl.modules import ProbabilisticActor, ValueOperator, set_recurrent_mode
from torchrl.modules.utils import get_primers_from_module
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE

import xlstm_rl.envs  # noqa: F401  (registers xlstm_rl/TMaze-v0)
from xlstm_rl.cores import build_core
from xlstm_rl.torchrl import MemoryModule


def memory(args, out_key: str, state_key: str) -> MemoryModule:
    core = build_core(args.core, 4, args.hidden_size)  # T-maze observations have 4 entries
    return MemoryModule(core, in_key="observation", out_key=out_key, state_key=state_key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--core", default="mlstm")
    parser.add_argument("--hidden-size", type=int, default=32)
    parser.add_argument("--corridor-length", type=int, default=4)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=64, help="steps per env and iteration")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # small tensors: more intra-op threads only add overhead

    actor_memory = memory(args, "actor_features", "actor_state")
    critic_memory = memory(args, "critic_features", "critic_state")
    head = TensorDictModule(nn.Linear(args.hidden_size, 2), ["actor_features"], ["logits"])
    actor = ProbabilisticActor(
        TensorDictSequential(actor_memory, head),
        in_keys=["logits"],
        distribution_class=torch.distributions.Categorical,
        return_log_prob=True,
    )
    critic = TensorDictSequential(
        critic_memory, ValueOperator(nn.Linear(args.hidden_size, 1), in_keys=["critic_features"])
    )
    # The critic's memory also runs while collecting, so that its state is carried
    # from step to step and each batch's first step has the state it needs.
    policy = TensorDictSequential(actor, critic_memory)

    def make_env():
        return GymEnv(
            "xlstm_rl/TMaze-v0",
            corridor_length=args.corridor_length,
            categorical_action_encoding=True,
        )

    env = TransformedEnv(SerialEnv(args.num_envs, make_env), InitTracker())
    env.append_transform(get_primers_from_module(policy))  # the state keys of both
    env.append_transform(RewardSum())
    env.set_seed(args.seed)

    frames = args.num_envs * args.steps
    collector = Collector(
        env, policy, frames_per_batch=frames, total_frames=frames * args.iterations
    )
    # shifted=True: the critic runs once over each row plus its last next observation.
    gae = GAE(gamma=0.99, lmbda=0.95, value_network=critic, shifted=True)
    loss_fn = ClipPPOLoss(actor, critic, clip_epsilon=0.2, entropy_coeff=0.01, critic_coeff=0.5)
    optim = torch.optim.Adam(loss_fn.parameters(), lr=args.lr)

    for iteration, data in enumerate(collector):  # data: (num_envs, steps), time last
        done = data["next", "done"].squeeze(-1)
        returns = data["next", "episode_reward"].squeeze(-1)[done]
        for _ in range(args.epochs):
            # GAE does not turn recurrent mode on by itself (ClipPPOLoss does).
            with torch.no_grad(), set_recurrent_mode(True):
                gae(data)
            for rows in torch.randperm(args.num_envs).chunk(2):  # minibatches of whole rows
                out = loss_fn(data[rows])
                loss = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
                optim.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(loss_fn.parameters(), 1.0)
                optim.step()
        collector.update_policy_weights_()
        print(
            f"iteration {iteration:3d}  episodes {len(returns):3d}  "
            f"mean return {returns.mean().item():+.3f}  loss {loss.item():.4f}"
        )
    collector.shutdown()


if __name__ == "__main__":
    main()
