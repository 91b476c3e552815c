"""Policy-gradient losses, apart from networks and return estimators."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _logp_and_entropy(logits: torch.Tensor, actions: torch.Tensor):
    """log pi(a|s) of the taken actions, and the entropy of pi(.|s), per row."""
    logp_all = F.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    return logp, -(logp_all.exp() * logp_all).sum(-1)


def policy_gradient_loss(
    logits: torch.Tensor,
    actions: torch.Tensor,
    psi: torch.Tensor,
    values: torch.Tensor | None = None,
    value_targets: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    value_coef: float = 0.5,
    reduction: str = "mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """-log pi(a|s) Psi  +  c (target - V(s))^2 / 2  -  beta H(pi(.|s)).

    Psi and the value targets are constants (detached here). With reduction="sum" the caller
    accumulates over chunks and divides itself (REINFORCE sums over a batch of episodes).
    """
    logp, entropy = _logp_and_entropy(logits, actions)
    reduce = torch.mean if reduction == "mean" else torch.sum
    policy_loss = -reduce(logp * psi.detach())
    entropy_term = reduce(entropy)
    loss = policy_loss - entropy_coef * entropy_term
    metrics = {"policy_loss": policy_loss.detach(), "entropy": entropy.mean().detach()}
    if values is not None and value_targets is not None:
        value_loss = 0.5 * reduce((value_targets.detach() - values) ** 2)
        loss = loss + value_coef * value_loss
        metrics["value_loss"] = value_loss.detach()
    return loss, metrics


def clipped_policy_loss(
    logits: torch.Tensor,
    actions: torch.Tensor,
    acted_logp: torch.Tensor,
    psi: torch.Tensor,
    values: torch.Tensor,
    value_targets: torch.Tensor,
    clip_ratio: float,
    entropy_coef: float = 0.0,
    value_coef: float = 0.5,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate (Schulman et al. 2017) in place of -log pi(a|s) Psi:
    -min(rho Psi, clip(rho, 1 - eps, 1 + eps) Psi), rho = pi(a|s) / pi_acted(a|s), plus the same
    value loss and entropy bonus. At rho = 1 its gradient is policy_gradient_loss's; a sample whose
    ratio has moved past the clip in Psi's favour stops pulling."""
    logp, entropy = _logp_and_entropy(logits, actions)
    log_ratio = logp - acted_logp.detach()
    ratio = log_ratio.exp()
    psi = psi.detach()
    surrogate = torch.min(ratio * psi, ratio.clamp(1 - clip_ratio, 1 + clip_ratio) * psi)
    policy_loss = -surrogate.mean()
    value_loss = 0.5 * ((value_targets.detach() - values) ** 2).mean()
    loss = policy_loss - entropy_coef * entropy.mean() + value_coef * value_loss
    with torch.no_grad():
        metrics = {
            "policy_loss": policy_loss.detach(),
            "entropy": entropy.mean(),
            "value_loss": value_loss.detach(),
            "clip_fraction": ((ratio - 1).abs() > clip_ratio).float().mean(),
            "approx_kl": ((ratio - 1) - log_ratio).mean(),  # Schulman's k3 estimator, >= 0
        }
    return loss, metrics
