"""Policy-gradient losses, apart from networks and return estimators."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    logp_all = F.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
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
