"""The recurrent policy: observation encoder -> memory core -> actor and critic heads.

Inputs are a TensorDict (or a plain dict, as the acting loop passes) with ``obs``,
``prev_action`` and ``prev_reward``, batch ``(B,)`` for ``step`` and ``(B, T)`` for
``forward``. The previous action and reward
(POPGym's convention, optional) are zeroed where an episode starts, so the policy
never sees the last episode's action in a new one. The core's recurrent state is
passed in and returned, never kept here. With ``policy.shared_core: false`` the critic
reads a core of its own and the state is a TensorDict ``{"actor": ..., "critic": ...}``
of the two cores' states.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from tensordict import TensorDict
from torch import nn
from torch.distributions import Normal

from xlstm_rl.agents.encoders import build_encoder
from xlstm_rl.config import CoreConfig, PolicyConfig
from xlstm_rl.cores import build_core


class Categorical:
    """A categorical over the last dim: torch's maths and sampling op, without its checks.

    ``torch.distributions.Categorical`` costs about 0.1 ms to build and sample at B = 8,
    as much as a whole acting step's heads; this computes the same quantities directly.
    """

    def __init__(self, logits: torch.Tensor):
        self.logits = F.log_softmax(logits, dim=-1)  # normalised: logits - logsumexp(logits)
        self._probs = None

    @property
    def probs(self) -> torch.Tensor:
        # computed once, on first use (not functools.cached_property: its lock stops
        # torch.compile from tracing a loss through the distribution)
        if self._probs is None:
            self._probs = self.logits.exp()
        return self._probs

    def sample(self) -> torch.Tensor:
        # torch.multinomial's own method for one draw (argmax of p / Exp(1) noise, the
        # exponential race), without its checks of the probabilities: about ten small ops
        # per acting step
        noise = torch.empty_like(self.probs).exponential_()
        return (self.probs / noise).argmax(-1)

    @property
    def mode(self) -> torch.Tensor:
        return self.probs.argmax(-1)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        return self.logits.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        logits = self.logits.clamp(min=torch.finfo(self.logits.dtype).min)
        return -(logits * self.probs).sum(-1)


class MultiCategorical:
    """Independent categoricals, one per MultiDiscrete component; actions (..., K)."""

    def __init__(self, logits: torch.Tensor, sizes: list[int]):
        self.parts = [Categorical(x) for x in logits.split(sizes, -1)]

    def sample(self) -> torch.Tensor:
        return torch.stack([d.sample() for d in self.parts], dim=-1)

    @property
    def mode(self) -> torch.Tensor:
        return torch.stack([d.logits.argmax(-1) for d in self.parts], dim=-1)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        return sum(d.log_prob(action[..., k]) for k, d in enumerate(self.parts))

    def entropy(self) -> torch.Tensor:
        return sum(d.entropy() for d in self.parts)


class DiagGaussian:
    """A Gaussian with diagonal covariance; log-prob and entropy summed over the action dims."""

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor):
        self.normal = Normal(mean, log_std.exp().expand_as(mean), validate_args=False)

    def sample(self) -> torch.Tensor:
        return self.normal.sample()

    @property
    def mode(self) -> torch.Tensor:
        return self.normal.mean

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        return self.normal.log_prob(action).sum(-1)

    def entropy(self) -> torch.Tensor:
        return self.normal.entropy().sum(-1)


def _layer(linear: nn.Linear, std: float) -> nn.Linear:
    """CleanRL's init: orthogonal weights with gain ``std``, zero bias."""
    nn.init.orthogonal_(linear.weight, std)
    nn.init.zeros_(linear.bias)
    return linear


def _trunk(in_size: int, width: int, layers: int) -> nn.Module:
    """``layers`` tanh layers of ``width`` between the core and a head (CleanRL's 64-64)."""
    modules = []
    for _ in range(layers):
        modules += [_layer(nn.Linear(in_size, width), 2**0.5), nn.Tanh()]
        in_size = width
    return nn.Sequential(*modules)


class ActionHead(nn.Module):
    """Action distribution for a Discrete, MultiDiscrete or Box action space.

    Actions are stored zero-based (``start`` removed) and flat: ``(...)`` long for
    Discrete, ``(..., K)`` long for MultiDiscrete, ``(..., D)`` float for Box.
    """

    def __init__(self, space: spaces.Space, in_size: int):
        super().__init__()
        self.space = space
        if isinstance(space, spaces.Discrete):
            self.sizes = [int(space.n)]
        elif isinstance(space, spaces.MultiDiscrete):
            self.sizes = [int(n) for n in space.nvec.reshape(-1)]
        elif isinstance(space, spaces.Box):
            self.sizes = [int(np.prod(space.shape))]
            self.log_std = nn.Parameter(torch.zeros(self.sizes[0]))
        else:
            raise ValueError(
                f"no action head for action space {space}; supported: Discrete, MultiDiscrete, Box"
            )
        self.linear = _layer(nn.Linear(in_size, sum(self.sizes)), 0.01)

    def forward(self, h: torch.Tensor):
        out = self.linear(h)
        if isinstance(self.space, spaces.Discrete):
            return Categorical(out)
        if isinstance(self.space, spaces.MultiDiscrete):
            return MultiCategorical(out, self.sizes)
        return DiagGaussian(out, self.log_std)

    def features(self, action: torch.Tensor) -> torch.Tensor:
        """The action as a policy input: one-hot(s) for discrete actions, the vector for Box."""
        if isinstance(self.space, spaces.Discrete):
            return F.one_hot(action.long(), self.sizes[0]).float()
        if isinstance(self.space, spaces.MultiDiscrete):
            return torch.cat(
                [F.one_hot(action[..., k].long(), n) for k, n in enumerate(self.sizes)], -1
            ).float()
        return action.float()

    def empty(self, *batch: int, device=None) -> torch.Tensor:
        """A zero action of the stored layout, for the 'previous action' before the first step."""
        if isinstance(self.space, spaces.Discrete):
            return torch.zeros(*batch, dtype=torch.long, device=device)
        if isinstance(self.space, spaces.MultiDiscrete):
            return torch.zeros(*batch, len(self.sizes), dtype=torch.long, device=device)
        return torch.zeros(*batch, self.sizes[0], device=device)

    def to_env(self, action: torch.Tensor) -> np.ndarray:
        """A batch of stored actions (B, ...) as the vector env expects them."""
        action = action.detach().cpu().numpy()
        if isinstance(self.space, spaces.Discrete):
            return action + self.space.start
        if isinstance(self.space, spaces.MultiDiscrete):
            return action.reshape(-1, *self.space.nvec.shape) + self.space.start
        action = action.reshape(-1, *self.space.shape)
        return np.clip(action, self.space.low, self.space.high).astype(self.space.dtype)

    def from_env(self, action: np.ndarray) -> torch.Tensor:
        """Inverse of ``to_env`` (without the clipping), for replaying actions."""
        action = np.asarray(action)
        if isinstance(self.space, spaces.Discrete):
            return torch.as_tensor(action - self.space.start, dtype=torch.long)
        if isinstance(self.space, spaces.MultiDiscrete):
            return torch.as_tensor(action - self.space.start, dtype=torch.long).reshape(
                len(action), -1
            )
        return torch.as_tensor(action, dtype=torch.float32).reshape(len(action), -1)


def action_feature_size(space: spaces.Space) -> int:
    """Width of ``ActionHead.features``: one-hot sizes summed, or the Box's size."""
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return int(space.nvec.sum())
    return int(np.prod(space.shape))


class Policy(nn.Module):
    """Encoder -> core -> actor and critic heads; any core from ``build_core`` drops in."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        core: CoreConfig,
        config: PolicyConfig,
    ):
        super().__init__()
        self.config = config
        self.encoder = build_encoder(observation_space, config.cnn_channels, config.embedding_size)
        in_size = self.encoder.output_size
        if config.prev_action:
            in_size += action_feature_size(action_space)
        if config.prev_reward:
            in_size += 1
        self.project = nn.Sequential(nn.Linear(in_size, config.encoder_size), nn.ReLU())

        def new_core():
            return build_core(core.name, config.encoder_size, core.hidden_size, **core.options)

        self.core = new_core()
        # policy.shared_core false: the critic reads a core of its own (same kind), and the
        # recurrent state is {"actor": ..., "critic": ...}
        self.critic_core = None if config.shared_core else new_core()
        self.actor_trunk = _trunk(self.core.output_size, config.head_hidden, config.head_layers)
        self.critic_trunk = _trunk(self.core.output_size, config.head_hidden, config.head_layers)
        head_size = config.head_hidden if config.head_layers else self.core.output_size
        self.actor = ActionHead(action_space, head_size)
        self.critic = _layer(nn.Linear(head_size, 1), 1.0)

    def initial_state(self, batch_size: int, device=None) -> TensorDict:
        state = self.core.initial_state(batch_size, device=device)
        if self.critic_core is None:
            return state
        critic = self.critic_core.initial_state(batch_size, device=device)
        return self._pair(state, critic)

    @staticmethod
    def _pair(actor: TensorDict, critic: TensorDict) -> TensorDict:
        return TensorDict({"actor": actor, "critic": critic}, batch_size=actor.batch_size)

    def _split(self, state: TensorDict) -> tuple[TensorDict, TensorDict]:
        if not ("actor" in state.keys() and "critic" in state.keys()):
            raise ValueError(
                "this policy has a separate critic core (policy.shared_core false): its state "
                "is a TensorDict with 'actor' and 'critic' entries, from Policy.initial_state; "
                f"got one with keys {sorted(state.keys())}"
            )
        return state["actor"], state["critic"]

    def _inputs(self, inputs: TensorDict, episode_start: torch.Tensor) -> torch.Tensor:
        parts = [self.encoder(inputs["obs"])]
        keep = (~episode_start).unsqueeze(-1).float()
        if self.config.prev_action:
            parts.append(self.actor.features(inputs["prev_action"]) * keep)
        if self.config.prev_reward:
            parts.append(inputs["prev_reward"].unsqueeze(-1).float() * keep)
        return self.project(torch.cat(parts, dim=-1))

    def step(self, inputs: TensorDict, state: TensorDict, reset: torch.Tensor):
        """One step for B envs: returns (action distribution, value (B,), new state)."""
        x = self._inputs(inputs, reset)
        return self._run_cores(lambda core, s: core.step(x, s, reset=reset), state)

    def act(self, inputs: TensorDict, state: TensorDict, reset: torch.Tensor):
        """``step``, then a sampled action: returns (action, its log-prob, value (B,), new
        state). One call for the collector to compile: the sampling joins the step's graph
        instead of running as separate small ops after it."""
        dist, value, state = self.step(inputs, state, reset)
        action = dist.sample()
        return action, dist.log_prob(action), value, state

    def forward(self, inputs: TensorDict, state: TensorDict, resets: torch.Tensor):
        """A (B, T) sequence from ``state``: returns (distribution, values (B, T), final state)."""
        x = self._inputs(inputs, resets)
        return self._run_cores(lambda core, s: core(x, s, resets=resets), state)

    def _run_cores(self, run, state: TensorDict):
        """``run(core, its state) -> (output, new state)`` through the actor's core, and the
        critic's where it has its own; then the heads: (distribution, value, new state)."""
        if self.critic_core is None:
            h, state = run(self.core, state)
            h_critic = h
        else:
            actor, critic = self._split(state)
            h, actor = run(self.core, actor)
            h_critic, critic = run(self.critic_core, critic)
            state = self._pair(actor, critic)
        value = self.critic(self.critic_trunk(h_critic)).squeeze(-1)
        return self.actor(self.actor_trunk(h)), value, state
