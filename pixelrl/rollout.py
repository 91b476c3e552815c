"""n-step rollouts with the autograd graph kept, and the actor-critic loss on them.

Shared by A2C (one learner, N synchronous envs) and A3C (each worker is such a learner).
"""

from __future__ import annotations

import numpy as np
import torch

from pixelrl.device import bf16_features
from pixelrl.losses import clipped_policy_loss, policy_gradient_loss
from pixelrl.models import sample_actions
from pixelrl.returns import actor_critic_targets


def collect(
    net,
    envs,
    obs,
    n_steps: int,
    device,
    on_episodes,
    bf16: bool = False,
    reuse: bool = False,
) -> tuple[dict, torch.Tensor | list[torch.Tensor]]:
    """Play n_steps on every env with the current policy; returns the rollout (logits and values
    with their autograd graph, actions, rewards, flags, next_values) and the next obs.
    `on_episodes(info, steps_done)` sees each step's info (episode stats).

    `envs` is one vector env with its obs tensor, or a list of them (groups of envs, with a list
    of obs tensors): then the groups step in turn, each one's step started (`step_async`) before
    the policy acts for the next, so that the forward pass of one group overlaps the emulation of
    another. The rollout is the same as one vector env of all the groups' envs would give, envs in
    group order; the next obs come back as a list.

    fp32 keeps each step's graph while acting. With `bf16`, acting runs without graphs and the
    loss's logits and values come from one forward pass over all n_steps x envs observations with
    the trunk under bf16 autocast (heads in fp32): one large batch instead of n_steps small ones,
    on bf16 matrix units. Advantages then use the fp32 values the policy acted with.
    `reuse` (for algo.epochs > 1) also keeps the observations and the acting policy's log-probs
    of its actions, for later passes over the same rollout (`rollout_losses`).
    """
    grouped = isinstance(envs, (list, tuple))
    groups = list(envs) if grouped else [envs]
    obs_now = list(obs) if grouped else [obs]
    offsets = np.cumsum([0] + [g.num_envs for g in groups])
    steps = [_Steps() for _ in groups]
    for t in range(n_steps + 1):
        for g, group_envs in enumerate(groups):
            if t > 0:  # finish this group's previous step (the other groups went on meanwhile)
                obs_now[g] = steps[g].finish(
                    group_envs, net, device, on_episodes, t, offsets[g], bf16 or reuse
                )
            if t < n_steps:
                steps[g].start(group_envs, net, obs_now[g], bf16)
    values = _cat([torch.stack(s.values) for s in steps], dim=1)
    with torch.no_grad():
        last_value = _cat([net(o)[1] for o in obs_now])
        next_values = torch.cat([values[1:].detach(), last_value[None]])
        for s in steps:
            for t, idx, v in s.boot:
                next_values[t, idx] = v

    def joined(name: str) -> torch.Tensor:  # (steps, envs of every group, ...)
        return _cat([torch.stack(getattr(s, name)) for s in steps], dim=1)

    def host(name: str) -> torch.Tensor:  # kept on the host until now: on a GPU, one copy each
        arrays = [np.stack(getattr(s, name)) for s in steps]
        return torch.as_tensor(np.concatenate(arrays, axis=1), device=device)

    rollout = {
        "logits": joined("logits"),
        "values": values,
        "actions": joined("actions"),
        "rewards": host("rewards"),
        "terminated": host("terminated"),
        "truncated": host("truncated"),
        "next_values": next_values,
    }
    seen = joined("obs") if bf16 or reuse else None
    if reuse:
        rollout["obs"] = seen
        with torch.no_grad():
            acted = torch.log_softmax(rollout["logits"], dim=-1)
            rollout["acted_logp"] = acted.gather(-1, rollout["actions"][..., None]).squeeze(-1)
    if bf16:
        rollout["acted_values"] = values
        rollout["logits"], rollout["values"] = _bf16_forward(net, seen, device)
    return rollout, (obs_now if grouped else obs_now[0])


def _cat(tensors: list[torch.Tensor], dim: int = 0) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=dim)


class _Steps:
    """One group's rollout so far: what its policy saw and did, and what its envs returned."""

    def __init__(self):
        self.logits, self.values, self.actions, self.obs = [], [], [], []
        self.rewards, self.terminated, self.truncated = [], [], []
        self.boot = []  # (t, env indices in the whole rollout, V(final obs)) for truncated episodes
        self._acted: torch.Tensor | None = None

    def start(self, envs, net, obs: torch.Tensor, bf16: bool) -> None:
        """Act on `obs` and start the envs' step."""
        with torch.set_grad_enabled(not bf16):
            logits, value = net(obs)
        with torch.no_grad():
            action = sample_actions(logits)
        envs.step_async(action.cpu().numpy())
        self.logits.append(logits)
        self.values.append(value)
        self.actions.append(action)
        self._acted = obs

    def finish(self, envs, net, device, on_episodes, t: int, offset: int, keep_obs: bool):
        """Wait for the step `start` began; returns the next obs."""
        next_obs, reward, terminated, truncated, info = envs.step_wait()
        on_episodes(info, t)
        if truncated.any():
            idx = truncated.nonzero()[0]
            with torch.no_grad():
                final = torch.as_tensor(info["final_obs"][idx], device=device)
                where = torch.as_tensor(idx + offset, device=device)
                self.boot.append((t - 1, where, net(final)[1]))
        if keep_obs:
            self.obs.append(self._acted)  # for the one batched forward, or later passes
        self.rewards.append(reward)
        self.terminated.append(terminated)
        self.truncated.append(truncated)
        return torch.as_tensor(next_obs, device=device)


def _bf16_forward(net, obs: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and values, with graphs, for (T, N, ...) observations in one batch."""
    steps, envs = obs.shape[:2]
    features = bf16_features(net.trunk, obs.flatten(0, 1), device)
    logits = net.policy(features)
    return logits.view(steps, envs, -1), net.value(features).view(steps, envs)


def _targets(rollout: dict, algo_cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """(Psi, value targets) from the values the policy acted with."""
    return actor_critic_targets(
        algo_cfg.psi,
        rollout["rewards"],
        rollout.get("acted_values", rollout["values"]).detach(),
        rollout["next_values"],
        rollout["terminated"],
        rollout["truncated"],
        algo_cfg.gamma,
        algo_cfg.gae_lambda,
    )


def rollout_losses(net, rollout: dict, algo_cfg, device, bf16: bool = False):
    """The loss of each of the algo.epochs passes over one rollout, one at a time: the caller
    steps its optimizer on each before asking for the next (whose forward pass then sees the
    updated weights). One pass: `loss_from_rollout`. More: PPO's clipped surrogate against the
    acting policy, with Psi and the value targets fixed from the acting values; the first pass
    uses the rollout's own logits and values, later ones a fresh forward over its observations.
    """
    if algo_cfg.epochs == 1:
        yield loss_from_rollout(rollout, algo_cfg)
        return
    psi, targets = _targets(rollout, algo_cfg)
    n_actions = rollout["logits"].shape[-1]
    for epoch in range(algo_cfg.epochs):
        if epoch == 0:
            logits, values = rollout["logits"], rollout["values"]
        elif bf16:
            logits, values = _bf16_forward(net, rollout["obs"], device)
        else:
            logits, values = net(rollout["obs"].flatten(0, 1))
        yield clipped_policy_loss(
            logits.reshape(-1, n_actions),
            rollout["actions"].reshape(-1),
            rollout["acted_logp"].reshape(-1),
            psi.reshape(-1),
            values.reshape(-1),
            targets.reshape(-1),
            algo_cfg.clip_ratio,
            entropy_coef=algo_cfg.entropy_coef,
            value_coef=algo_cfg.value_coef,
        )


def loss_from_rollout(rollout: dict, algo_cfg) -> tuple[torch.Tensor, dict]:
    psi, targets = _targets(rollout, algo_cfg)
    n_actions = rollout["logits"].shape[-1]
    return policy_gradient_loss(
        rollout["logits"].reshape(-1, n_actions),
        rollout["actions"].reshape(-1),
        psi.reshape(-1),
        rollout["values"].reshape(-1),
        targets.reshape(-1),
        entropy_coef=algo_cfg.entropy_coef,
        value_coef=algo_cfg.value_coef,
    )
