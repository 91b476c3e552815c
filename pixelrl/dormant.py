"""Dormant units of an actor-critic's ReLU trunk, and giving them fresh weights (`algo.recycle_every`).

A ReLU unit whose pre-activation is negative on every input outputs 0 and gets no gradient: it is
dormant, and nothing brings it back. Pong's frames are nearly all background, so a unit's sign on
the background decides whether it ever fires, and A3C's trunk sheds units fast: a run typically
lives on 1-4 of conv1's 16 channels, and in 2 of 11 runs all of them went (BENCHMARKS.md). ReDo
(Sokar et al. 2023, "The Dormant Neuron Phenomenon in Deep Reinforcement Learning") recycles them:
every so many updates, score each unit by its mean activation over a batch of recent
observations, and for a unit whose score is at most `tau` x its layer's mean score, draw fresh
incoming weights (the layer's initial distribution, bias 0) and set its outgoing weights to 0, so
the network computes exactly what it did before and the unit can learn from there.
A3C's default is narrower (`algo.recycle_scope=dead_layers`): only a layer that is dead as a whole
is recycled, so a live trunk is never touched and only a run the dead trunk would lose changes.

The optimizer's statistics of the fresh incoming weights are reset too: a dormant unit's
squared-gradient average has decayed towards 0, and RMSProp's step lr g / (sqrt(s) + eps) would
be up to lr g / eps on its first gradient; it gets its layer's mean instead (first moments: 0).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pixelrl.models import ActorCritic, MLPTrunk


def _layers(net: ActorCritic) -> list[tuple[nn.Module, nn.Module, list[nn.Module]]]:
    """(layer, its activation module, the layers that read its units) along the trunk: a conv
    trunk's convolutions and FC layer, or an mlp trunk's Linear layers."""
    if isinstance(net.trunk, MLPTrunk):
        mods = net.trunk.net
        chain = [(m, mods[i + 1]) for i, m in enumerate(mods) if isinstance(m, nn.Linear)]
    else:
        convs = net.trunk.encoder.convs
        chain = [(m, convs[i + 1]) for i, m in enumerate(convs) if isinstance(m, nn.Conv2d)]
        chain.append((net.trunk.fc[0], net.trunk.fc[1]))
    heads = [net.policy.linear] + ([net.value.linear] if net.value is not None else [])
    readers = [[layer] for layer, _ in chain[1:]] + [heads]
    return [(layer, act, r) for (layer, act), r in zip(chain, readers)]


# a layer with fewer of its outputs above 0 than this is dead (it no longer sees the screen): the
# dead A3C Pong trunks showed 0.0001-0.0002 (BENCHMARKS.md), live ones 0.05-0.13, a fresh one ~0.5
DEAD_FRACTION = 1e-3


@torch.no_grad()
def activity(net: ActorCritic, obs: torch.Tensor) -> list[tuple[torch.Tensor, float]]:
    """For each trunk layer over `obs`: its units' mean |activation| (per channel for a conv) and
    the fraction of its outputs above 0."""
    outs: list[torch.Tensor] = []
    hooks = [
        act.register_forward_hook(lambda _m, _i, out: outs.append(out.detach().float()))
        for _, act, _ in _layers(net)
    ]
    try:
        net(obs)
    finally:
        for h in hooks:
            h.remove()
    return [
        (h.abs().mean(dim=(0, 2, 3) if h.dim() == 4 else 0), float((h > 0).float().mean()))
        for h in outs
    ]


def unit_scores(net: ActorCritic, obs: torch.Tensor) -> list[torch.Tensor]:
    """Each trunk layer's mean |activation| per unit (per channel for a conv) over `obs`."""
    return [score for score, _ in activity(net, obs)]


@torch.no_grad()
def recycle_dormant(
    net: ActorCritic, obs: torch.Tensor, optimizer=None, tau: float = 0.0, scope: str = "units"
) -> list[int]:
    """Give every dormant unit of `net`'s trunk fresh incoming and zero outgoing weights, in place;
    returns how many units each layer recycled. With `tau=0` a unit is dormant when it is 0 on
    every observation of `obs`. With `scope="dead_layers"` only a dead layer (fewer than
    DEAD_FRACTION of its outputs above 0 on `obs`, a ReLU layer only) is recycled, all of its
    units: a live trunk is never touched."""
    counts = []
    for (layer, act, readers), (score, active) in zip(_layers(net), activity(net, obs)):
        if scope == "dead_layers":  # a leaky ReLU or ELU layer below 0 still passes gradients
            dead = active < DEAD_FRACTION and isinstance(act, nn.ReLU)
            dormant = torch.full_like(score, dead, dtype=torch.bool)
        elif tau > 0:
            dormant = score <= tau * score.mean()
        else:
            dormant = score <= 0
        idx = dormant.nonzero().squeeze(1)
        counts.append(len(idx))
        if len(idx) == 0:
            continue
        fresh = torch.empty(layer.weight.shape)  # contiguous: orthogonal_ cannot fill channels-last
        nn.init.orthogonal_(fresh, math.sqrt(2))  # the trunk's initialization (init_orthogonal)
        layer.weight[idx] = fresh[idx].to(layer.weight.dtype)
        params = [layer.weight] + ([layer.bias] if layer.bias is not None else [])
        if layer.bias is not None:
            layer.bias[idx] = 0
        if optimizer is not None:
            for p in params:
                reset_statistics(optimizer, p, idx)
        for reader in readers:
            if isinstance(reader, nn.Conv2d):
                reader.weight[:, idx] = 0
            else:  # a Linear reads a flattened (C, H, W): each channel is a run of H*W columns
                per = reader.weight.shape[1] // len(score)
                cols = (idx[:, None] * per + torch.arange(per)).flatten()
                reader.weight[:, cols] = 0
    return counts


def reset_statistics(optimizer, param: torch.Tensor, idx: torch.Tensor) -> None:
    """The optimizer's per-weight statistics of `param`'s rows `idx`: squared-gradient averages to
    the mean over `param`, first moments to 0 (shared A3C optimizers and torch's alike)."""
    stats = getattr(optimizer, "statistics", None)
    if stats is not None:
        found = stats(param)
    else:
        found = dict(optimizer.state.get(param, {}))
    for name, s in found.items():
        if not torch.is_tensor(s) or s.shape != param.shape:
            continue
        s[idx] = s.mean() if name in ("square_avg", "exp_avg_sq") else 0
