"""TorchRL end to end: a T-maze GymEnv with InitTracker and the primers, a Collector,
TorchRL's GAE and ClipPPOLoss, with memory cores inside the actor and the critic.

The key check: what the loss sees in recurrent mode (core.forward over the batch,
resets = is_init) equals what the collector recorded step by step (core.step),
including rows that begin mid-episode and episodes that begin mid-row.
"""

import pytest
import torch
from torch import nn

pytest.importorskip("torchrl")

from tensordict.nn import TensorDictModule, TensorDictSequential  # noqa: E402
from torchrl.collectors import Collector  # noqa: E402
from torchrl.envs import GymEnv, InitTracker, SerialEnv, TransformedEnv  # noqa: E402
from torchrl.modules import ProbabilisticActor, ValueOperator, set_recurrent_mode  # noqa: E402
from torchrl.modules.utils import get_primers_from_module  # noqa: E402
from torchrl.objectives import ClipPPOLoss  # noqa: E402
from torchrl.objectives.value import GAE  # noqa: E402

import xlstm_rl.envs  # noqa: E402,F401  (registers the T-maze)
from xlstm_rl.cores import build_core  # noqa: E402
from xlstm_rl.torchrl import MemoryModule  # noqa: E402

HID = 16
NUM_ENVS = 2
STEPS = 37  # per env and batch; episodes last 5 steps, so batches cut episodes
TOL = dict(rtol=1e-5, atol=1e-5)  # float32, sequence form vs step form
RECORDED = ("logits", "actor_features", "critic_features", "action_log_prob")


def build(core_name, seed=0):
    torch.manual_seed(seed)
    options = {"num_heads": 2} if core_name in ("mlstm", "slstm", "xlstm") else {}
    actor_memory = MemoryModule(
        build_core(core_name, 4, HID, **options),
        in_key="observation",
        out_key="actor_features",
        state_key="actor_state",
    )
    critic_memory = MemoryModule(
        build_core(core_name, 4, HID, **options),
        in_key="observation",
        out_key="critic_features",
        state_key="critic_state",
    )
    actor_net = TensorDictSequential(
        actor_memory, TensorDictModule(nn.Linear(HID, 2), ["actor_features"], ["logits"])
    )
    actor = ProbabilisticActor(
        actor_net,
        in_keys=["logits"],
        distribution_class=torch.distributions.Categorical,
        return_log_prob=True,
    )
    critic = TensorDictSequential(
        critic_memory, ValueOperator(nn.Linear(HID, 1), in_keys=["critic_features"])
    )
    # The critic's memory runs during collection too, so its state is carried along.
    policy = TensorDictSequential(actor, critic_memory)

    def make_env():
        return GymEnv("xlstm_rl/TMaze-v0", corridor_length=4, categorical_action_encoding=True)

    env = TransformedEnv(SerialEnv(NUM_ENVS, make_env), InitTracker())
    env.append_transform(get_primers_from_module(policy))
    env.set_seed(seed)
    return actor_net, actor, critic, critic_memory, policy, env


def recompute(actor_net, critic_memory, data):
    """The recorded outputs, recomputed in recurrent mode over the whole batch."""
    with torch.no_grad(), set_recurrent_mode(True):
        out = actor_net(data.clone().exclude(*RECORDED))
        return critic_memory(out)


def check_sequence_equals_steps(actor_net, critic_memory, data):
    again = recompute(actor_net, critic_memory, data)
    torch.testing.assert_close(again["logits"], data["logits"], **TOL)
    torch.testing.assert_close(again["critic_features"], data["critic_features"], **TOL)


def true_values(critic, data):
    """Step-form values of the root and next observations (where they exist) from what
    the collector recorded; the value after the last step is one more critic step."""
    head = critic[1]
    value = head(data.select("critic_features").clone())["state_value"].squeeze(-1)
    last = data[:, -1]["next"].select("observation", "critic_state", "is_init", strict=False)
    last = last.clone()
    last["is_init"] = torch.zeros_like(last["is_init"])
    with torch.no_grad():
        after = critic(last)["state_value"].squeeze(-1)
    next_value = torch.cat([value[:, 1:], after[:, None]], 1)
    return value, next_value, ~data["next", "done"].squeeze(-1)


def check_gae_values(critic, data):
    """GAE in recurrent mode, shifted or not, uses exactly the step-form values."""
    value, next_value, has_next = true_values(critic, data)
    for shifted in (False, True):
        gae = GAE(
            gamma=0.99, lmbda=0.95, value_network=critic, shifted=shifted, deactivate_vmap=True
        )
        out = data.exclude("state_value", ("next", "state_value"))
        with torch.no_grad(), set_recurrent_mode(True):
            gae(out)
        torch.testing.assert_close(out["state_value"].squeeze(-1), value, **TOL)
        got = out["next", "state_value"].squeeze(-1)
        torch.testing.assert_close(got[has_next], next_value[has_next], **TOL)


def ppo_update(actor, critic, data, optim, loss_fn, gae):
    with torch.no_grad(), set_recurrent_mode(True):
        gae(data)
    out = loss_fn(data)
    total = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
    optim.zero_grad()
    total.backward()
    optim.step()
    return out, total


def test_collect_gae_clip_ppo_with_mlstm():
    actor_net, actor, critic, critic_memory, policy, env = build("mlstm")
    collector = Collector(
        env, policy, frames_per_batch=NUM_ENVS * STEPS, total_frames=3 * NUM_ENVS * STEPS
    )
    gae = GAE(gamma=0.99, lmbda=0.95, value_network=critic, shifted=True)
    loss_fn = ClipPPOLoss(actor, critic, entropy_coeff=0.01)
    optim = torch.optim.Adam(loss_fn.parameters(), lr=1e-3)
    params = dict(loss_fn.named_parameters())
    assert any("actor_network" in n for n in params) and any("critic" in n for n in params)
    for batch, data in enumerate(collector):
        assert data.shape == (NUM_ENVS, STEPS)
        is_init = data["is_init"].squeeze(-1)
        assert is_init[:, 1:].any()  # episodes that begin mid-row
        if batch > 0:  # rows that begin mid-episode, with a carried state
            assert not is_init[:, 0].all()
            assert data["actor_state", "block0", "C"][~is_init[:, 0], 0].abs().sum() > 0

        check_sequence_equals_steps(actor_net, critic_memory, data)
        check_gae_values(critic, data)
        with torch.no_grad(), set_recurrent_mode(True):
            gae(data)

        # Before any update the policy that the loss recomputes is the behaviour policy.
        with torch.no_grad():
            out = loss_fn(data)
        torch.testing.assert_close(out["max_ratio"], torch.tensor(1.0), **TOL)
        torch.testing.assert_close(out["mean_ratio"], torch.tensor(1.0), **TOL)

        before = {n: p.detach().clone() for n, p in loss_fn.named_parameters()}
        out, total = ppo_update(actor, critic, data, optim, loss_fn, gae)
        assert torch.isfinite(total)
        for key in ("loss_objective", "loss_critic", "loss_entropy"):
            assert torch.isfinite(out[key]), key
        changed = {n for n, p in loss_fn.named_parameters() if not torch.equal(p, before[n])}
        assert any("actor_network" in n and "core" in n for n in changed)
        assert any("critic" in n and "core" in n for n in changed)
        # Minibatches of whole rows (each a single 1-D trajectory) work too.
        for row in range(NUM_ENVS):
            _, total = ppo_update(actor, critic, data[row], optim, loss_fn, gae)
            assert torch.isfinite(total)
        collector.update_policy_weights_()
    collector.shutdown()


@pytest.mark.parametrize("core_name", ["lstm", "gru", "mlp", "xlstm"])
def test_smoke_other_cores(core_name):
    actor_net, actor, critic, critic_memory, policy, env = build(core_name, seed=1)
    collector = Collector(env, policy, frames_per_batch=NUM_ENVS * 12, total_frames=NUM_ENVS * 24)
    gae = GAE(gamma=0.99, lmbda=0.95, value_network=critic, shifted=True)
    loss_fn = ClipPPOLoss(actor, critic, entropy_coeff=0.01)
    optim = torch.optim.Adam(loss_fn.parameters(), lr=1e-3)
    for data in collector:
        check_sequence_equals_steps(actor_net, critic_memory, data)
        check_gae_values(critic, data)
        _, total = ppo_update(actor, critic, data, optim, loss_fn, gae)
        assert torch.isfinite(total)
    collector.shutdown()
