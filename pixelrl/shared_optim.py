"""Optimizers whose statistics live in shared memory, for Hogwild A3C.

A3C paper, Supp. 8: RMSProp with statistics g shared across threads was the most robust. Both
optimizers here keep every statistic, the step count included, in shared-memory tensors, so a
step taken by one worker is seen by all. `step(params, grads, lr)` takes the worker's local
gradients explicitly: shared parameters are updated in place, nothing touches `.grad`.

Why the step count must be shared: with a per-worker count, a worker that starts late computes
Adam's bias correction 1/(1 - beta1^t) with t=1 against a first moment accumulated by everyone, a
10x too large step. An optional lock (A3C keeps it on) serializes step(); interleaved steps can
otherwise mix half-updated moments. It costs a few microseconds per update.
"""

from __future__ import annotations

import math

import torch


class SharedRMSprop:
    """RMSProp (PyTorch's form): s <- a s + (1 - a) g^2;  w <- w - lr g / (sqrt(s) + eps)."""

    def __init__(self, params, lr: float = 7e-4, alpha: float = 0.99, eps: float = 1e-5):
        self.params = list(params)
        self.lr, self.alpha, self.eps = lr, alpha, eps
        self.square_avg = [torch.zeros_like(p).share_memory_() for p in self.params]
        self.steps = torch.zeros(1, dtype=torch.int64).share_memory_()

    @torch.no_grad()
    def step(self, grads, lr: float | None = None, track: bool = False) -> float:
        """Apply one update; with track=True return the largest absolute weight change."""
        lr = self.lr if lr is None else lr
        largest = 0.0
        for p, g, sq in zip(self.params, grads, self.square_avg, strict=True):
            if g is None:
                continue
            sq.mul_(self.alpha).addcmul_(g, g, value=1 - self.alpha)
            denom = sq.sqrt().add_(self.eps)
            if track:
                largest = max(largest, float((g / denom).abs().max()) * lr)
            p.addcdiv_(g, denom, value=-lr)
        self.steps += 1
        return largest

    def state_dict(self) -> dict:
        return {"square_avg": [s.clone() for s in self.square_avg], "steps": self.steps.clone()}

    def load_state_dict(self, state: dict) -> None:
        for s, saved in zip(self.square_avg, state["square_avg"], strict=True):
            s.copy_(saved)
        self.steps.copy_(state["steps"])


class SharedAdam:
    """Adam with shared first/second moments and a shared step count."""

    def __init__(self, params, lr: float = 1e-4, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.exp_avg = [torch.zeros_like(p).share_memory_() for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p).share_memory_() for p in self.params]
        self.steps = torch.zeros(1, dtype=torch.int64).share_memory_()

    @torch.no_grad()
    def step(self, grads, lr: float | None = None, track: bool = False) -> float:
        lr = self.lr if lr is None else lr
        b1, b2 = self.betas
        self.steps += 1
        t = int(self.steps.item())
        c1 = 1 - b1**t
        c2 = math.sqrt(1 - b2**t)
        largest = 0.0
        for p, g, m, v in zip(self.params, grads, self.exp_avg, self.exp_avg_sq, strict=True):
            if g is None:
                continue
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = v.sqrt().div_(c2).add_(self.eps)
            if track:
                largest = max(largest, float((m / denom).abs().max()) * lr / c1)
            p.addcdiv_(m, denom, value=-lr / c1)
        return largest

    def state_dict(self) -> dict:
        return {
            "exp_avg": [m.clone() for m in self.exp_avg],
            "exp_avg_sq": [v.clone() for v in self.exp_avg_sq],
            "steps": self.steps.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        for m, saved in zip(self.exp_avg, state["exp_avg"], strict=True):
            m.copy_(saved)
        for v, saved in zip(self.exp_avg_sq, state["exp_avg_sq"], strict=True):
            v.copy_(saved)
        self.steps.copy_(state["steps"])


def make_shared_optimizer(algo_cfg, params):
    if algo_cfg.optimizer == "shared_adam":
        return SharedAdam(params, lr=algo_cfg.lr, eps=algo_cfg.eps)
    return SharedRMSprop(params, lr=algo_cfg.lr, alpha=algo_cfg.rmsprop_alpha, eps=algo_cfg.eps)
