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
    obs: torch.Tensor,
    n_steps: int,
    device,
    on_episodes,
    bf16: bool = False,
    reuse: bool = False,
) -> tuple[dict, torch.Tensor]:
    """Play n_steps on every env with the current policy; returns the rollout (logits and values
    with their autograd graph, actions, rewards, flags, next_values) and the next obs.
    `on_episodes(info, steps_done)` sees each step's info (episode stats).

    fp32 keeps each step's graph while acting. With `bf16`, acting runs without graphs and the
    loss's logits and values come from one forward pass over all n_steps x envs observations with
    the trunk under bf16 autocast (heads in fp32): one large batch instead of n_steps small ones,
    on bf16 matrix units. Advantages then use the fp32 values the policy acted with.
    `reuse` (for algo.epochs > 1) also keeps the observations and the acting policy's log-probs
    of its actions, for later passes over the same rollout (`rollout_losses`).
    """
    grad = not bf16
    logits_t, values_t, actions_t, rewards_t, term_t, trunc_t, obs_t = [], [], [], [], [], [], []
    boot = []  # (t, env indices, V(final obs)) for truncated episodes
    for t in range(n_steps):
        with torch.set_grad_enabled(grad):
            logits, value = net(obs)
        with torch.no_grad():
            action = sample_actions(logits)
        next_obs, reward, terminated, truncated, info = envs.step(action.cpu().numpy())
        on_episodes(info, t + 1)
        if truncated.any():
            idx = truncated.nonzero()[0]
            with torch.no_grad():
                final = torch.as_tensor(info["final_obs"][idx], device=device)
                boot.append((t, torch.as_tensor(idx, device=device), net(final)[1]))
        if bf16 or reuse:
            obs_t.append(obs)  # for the one batched forward below, or later passes
        logits_t.append(logits)
        values_t.append(value)
        actions_t.append(action)
        # kept on the host until the rollout ends: on a GPU, one copy each instead of n_steps
        rewards_t.append(reward)
        term_t.append(terminated)
        trunc_t.append(truncated)
        obs = torch.as_tensor(next_obs, device=device)
    values = torch.stack(values_t)
    with torch.no_grad():
        last_value = net(obs)[1]
        next_values = torch.cat([values[1:].detach(), last_value[None]])
        for t, idx, v in boot:
            next_values[t, idx] = v
    rollout = {
        "logits": torch.stack(logits_t),
        "values": values,
        "actions": torch.stack(actions_t),
        "rewards": torch.as_tensor(np.stack(rewards_t), device=device),
        "terminated": torch.as_tensor(np.stack(term_t), device=device),
        "truncated": torch.as_tensor(np.stack(trunc_t), device=device),
        "next_values": next_values,
    }
    seen = torch.stack(obs_t) if obs_t else None
    if reuse:
        rollout["obs"] = seen
        with torch.no_grad():
            acted = torch.log_softmax(rollout["logits"], dim=-1)
            rollout["acted_logp"] = acted.gather(-1, rollout["actions"][..., None]).squeeze(-1)
    if bf16:
        rollout["acted_values"] = values
        rollout["logits"], rollout["values"] = _bf16_forward(net, seen, device)
    return rollout, obs


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
