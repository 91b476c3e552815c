"""Pure return and advantage math. No networks, no envs: tensors (or arrays) in, tensors out.

Rollout functions take (T, N) tensors, one column per env, with the conventions:
  rewards[t]      r_t, the reward of transition t
  terminated[t]   the episode ended at t in a terminal state: nothing to bootstrap
  truncated[t]    the episode was cut at t (time limit): bootstrap from V(final observation)
  values[t]       V(s_t)
  next_values[t]  V(s_{t+1}); at an episode end, V(final observation) (used only if truncated);
                  next_values[T-1] bootstraps the whole rollout
Episode functions (REINFORCE) take one episode's 1-D numpy rewards.
"""

from __future__ import annotations

import numpy as np
import torch


def nstep_returns(rewards, next_values, terminated, truncated, gamma: float) -> torch.Tensor:
    """Bootstrapped n-step returns q_t = r_t + g r_{t+1} + ... + g^k V(s_{t+k}), where the chain
    stops at the rollout end or at an episode end (terminal: no bootstrap; truncated: V(final))."""
    done = terminated | truncated
    notterm = (~terminated).to(rewards.dtype)
    q = torch.empty_like(rewards)
    carry = next_values[-1]
    for t in reversed(range(rewards.shape[0])):
        carry = torch.where(done[t], next_values[t], carry)
        carry = rewards[t] + gamma * notterm[t] * carry
        q[t] = carry
    return q


def td_residuals(rewards, values, next_values, terminated, gamma: float) -> torch.Tensor:
    """delta_t = r_t + g (1 - terminal_t) V(s_{t+1}) - V(s_t)  (the seed's choice 6)."""
    notterm = (~terminated).to(rewards.dtype)
    return rewards + gamma * notterm * next_values - values


def gae(
    rewards, values, next_values, terminated, truncated, gamma: float, lam: float
) -> torch.Tensor:
    """GAE(lambda) (Schulman et al. 2015): A_t = delta_t + g lam (1 - done_t) A_{t+1}.
    lam=0 gives the TD residual, lam=1 the n-step advantage q_t - V(s_t)."""
    deltas = td_residuals(rewards, values, next_values, terminated, gamma)
    notdone = (~(terminated | truncated)).to(rewards.dtype)
    adv = torch.empty_like(rewards)
    carry = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        carry = deltas[t] + gamma * lam * notdone[t] * carry
        adv[t] = carry
    return adv


def actor_critic_targets(
    psi: str, rewards, values, next_values, terminated, truncated, gamma: float, lam: float
):
    """(Psi_t, value target_t) for the actor-critic family.

    td:        Psi = delta_t,               target = r_t + g V(s_{t+1})
    q:         Psi = q_t (no baseline),     target = q_t
    advantage: Psi = q_t - V(s_t),          target = q_t
    gae:       Psi = GAE(lambda),           target = GAE + V(s_t)  (the lambda-return)
    """
    if psi == "td":
        deltas = td_residuals(rewards, values, next_values, terminated, gamma)
        return deltas, deltas + values
    if psi in ("q", "advantage"):
        q = nstep_returns(rewards, next_values, terminated, truncated, gamma)
        return (q if psi == "q" else q - values), q
    if psi == "gae":
        adv = gae(rewards, values, next_values, terminated, truncated, gamma, lam)
        return adv, adv + values
    raise ValueError(f"no actor-critic target for algo.psi={psi!r}")


# ------------------------------------------------------------------------------------------
# Monte-Carlo (REINFORCE): one finished episode at a time
# ------------------------------------------------------------------------------------------


def reward_to_go(rewards: np.ndarray, gamma: float, reset_on_reward: bool = False) -> np.ndarray:
    """G_t = r_t + g G_{t+1} within one episode (the seed's choice 2).

    reset_on_reward: restart the sum at every nonzero reward, as pg-pong does (each Pong point
    is its own game, so actions are credited only for the point they led to)."""
    out = np.empty(len(rewards), np.float64)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        if reset_on_reward and rewards[t] != 0:
            running = 0.0
        running = running * gamma + rewards[t]
        out[t] = running
    return out


def total_return(rewards: np.ndarray, gamma: float, reset_on_reward: bool = False) -> np.ndarray:
    """The whole (discounted) return of the trajectory, the same weight for every step (the
    seed's choice 1). With reset_on_reward each segment ending at a nonzero reward counts as one
    trajectory: its steps all get that segment's return."""
    g = reward_to_go(rewards, gamma, reset_on_reward)
    out = np.empty_like(g)
    start = 0
    for t in range(len(rewards)):
        segment_end = t == len(rewards) - 1 or (reset_on_reward and rewards[t] != 0)
        if segment_end:
            out[start : t + 1] = g[start]
            start = t + 1
    return out


def standardize(x: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """(x - mean) / std; an all-equal vector becomes zeros."""
    if len(x) == 0:
        return x
    std = x.std()
    return (x - x.mean()) / (std + eps) if std > 0 else np.zeros_like(x)


def episode_returns(
    rewards: np.ndarray, psi: str, gamma: float, reset_on_reward: bool = False
) -> np.ndarray:
    """An episode's returns before any baseline: the seed's choice 1 (`total`) or, for
    `reward_to_go` and `baseline`, choice 2 (the baseline is subtracted by the caller)."""
    if psi == "total":
        return total_return(rewards, gamma, reset_on_reward)
    return reward_to_go(rewards, gamma, reset_on_reward)


def normalize_returns(psi: list[np.ndarray], mode: str) -> list[np.ndarray]:
    """Standardize each episode's Psi (`episode`, pg-pong), all of a batch's together (`batch`),
    or not at all (`none`)."""
    if mode == "episode":
        return [standardize(p) for p in psi]
    if mode == "batch":
        flat = standardize(np.concatenate(psi))
        return np.split(flat, np.cumsum([len(p) for p in psi])[:-1])
    return psi
