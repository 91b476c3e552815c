"""Optimizers and the learning-rate schedule, built in one place for every algorithm.

`make_optimizer(algo_cfg, params)` gives RMSprop / Adam, or, for A3C, an optimizer whose
statistics live in shared memory.

RMSprop and Adam are torch.optim's, step for step (the same tensor operations in the same order,
checked for equal weights in tests/test_optim.py; the same state_dict layout, so checkpoints
written with torch.optim load), written here because torch.optim's first use (its constructor)
imports torch._dynamo: about 1.7 s of CPU at the start of every training run on a 2-core EPYC,
longer than importing torch itself.

`LinearLR` is `algo.lr_decay`; every algorithm applies it the same way:
`schedule.apply(optimizer, frames)` just before `optimizer.step(...)`.

Shared optimizers (Hogwild A3C). A3C paper, Supp. 8: RMSProp with statistics g shared across threads was the most robust. Both
optimizers here keep every statistic, the step count included, in shared-memory tensors, so a
step taken by one worker is seen by all. `step(grads)` takes the worker's local gradients
explicitly: shared parameters are updated in place, nothing touches `.grad`. Their learning rate
is `param_groups[0]["lr"]`, as in torch's optimizers, so the schedule sets it the same way.

Why the step count must be shared: with a per-worker count, a worker that starts late computes
Adam's bias correction 1/(1 - beta1^t) with t=1 against a first moment accumulated by everyone, a
10x too large step. An optional lock (A3C keeps it on) serializes step(); interleaved steps can
otherwise mix half-updated moments. It costs a few microseconds per update.
"""

from __future__ import annotations

import math

import torch


class _Shared:
    """What both shared optimizers hold: the shared parameters, a shared step count, and this
    process's learning rate."""

    def __init__(self, params, lr: float):
        self.params = list(params)
        self.param_groups = [{"lr": lr}]  # this process's learning rate (set by the schedule)
        self.steps = torch.zeros(1, dtype=torch.int64).share_memory_()

    def _zeros(self) -> list[torch.Tensor]:
        """One shared-memory statistic per parameter, zero."""
        return [torch.zeros_like(p).share_memory_() for p in self.params]

    def statistics(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        """`param`'s per-weight statistics by name (torch's state keys), for in-place edits."""
        i = next(i for i, p in enumerate(self.params) if p is param)
        return {name: getattr(self, name)[i] for name in self.STATISTICS}


class SharedRMSprop(_Shared):
    """RMSProp: s <- a s + (1 - a) g^2, then in PyTorch's form (`form="torch"`) s starts at 0 and
    w <- w - lr g / (sqrt(s) + eps); in TensorFlow's (`"tf"`, the A3C paper's) s starts at 1 and
    w <- w - lr g / sqrt(s + eps). PyTorch's first step is 10 lr per weight (s = 0.01 g^2), and a
    weight whose gradients stayed near 0 (a unit that rarely fires) moves by up to lr g / eps when
    they return; TensorFlow's warms up from small steps and caps |step| at lr |g| / sqrt(eps)."""

    STATISTICS = ("square_avg",)

    def __init__(
        self, params, lr: float = 7e-4, alpha: float = 0.99, eps: float = 1e-5, form: str = "torch"
    ):
        super().__init__(params, lr)
        if form not in ("torch", "tf"):
            raise ValueError(f"unknown RMSProp form {form!r}")
        self.alpha, self.eps, self.eps_inside = alpha, eps, form == "tf"
        self.square_avg = self._zeros()
        if self.eps_inside:
            for s in self.square_avg:
                s.fill_(1.0)

    @torch.no_grad()
    def step(self, grads, track: bool = False) -> float:
        """Apply one update; with track=True return the largest absolute weight change."""
        lr = self.param_groups[0]["lr"]
        largest = 0.0
        for p, g, sq in zip(self.params, grads, self.square_avg, strict=True):
            if g is None:
                continue
            sq.mul_(self.alpha).addcmul_(g, g, value=1 - self.alpha)
            denom = sq.add(self.eps).sqrt_() if self.eps_inside else sq.sqrt().add_(self.eps)
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


class SharedAdam(_Shared):
    """Adam with shared first/second moments and a shared step count."""

    STATISTICS = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr: float = 1e-4, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, lr)
        self.betas, self.eps = betas, eps
        self.exp_avg, self.exp_avg_sq = self._zeros(), self._zeros()

    @torch.no_grad()
    def step(self, grads, track: bool = False) -> float:
        lr = self.param_groups[0]["lr"]
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


class _Local:
    """One parameter group, updated from each parameter's `.grad`, with torch.optim's interface:
    `param_groups[0]["lr"]` (set by the schedule), `state[param]` (per-weight statistics and a
    step count), `zero_grad()`, `step()`, `state_dict()` / `load_state_dict()`."""

    STATISTICS: tuple[str, ...] = ()
    # torch.optim's other settings, at the values these classes implement: kept in the group so
    # that a checkpoint written here also steps in torch.optim, and checked when one is loaded
    FIXED: dict = {
        "weight_decay": 0,
        "maximize": False,
        "foreach": None,
        "capturable": False,
        "differentiable": False,
    }

    def __init__(self, params, **hyper):
        self.param_groups = [{"params": list(params), **hyper, **self.FIXED}]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.detach_().zero_()

    def _with_grads(self):
        """(group, params that have a gradient, their grads, their states), states made on first use."""
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.grad is not None]
        for p in params:
            if p not in self.state:
                self.state[p] = {"step": torch.tensor(0.0)}
                for name in self.STATISTICS:
                    self.state[p][name] = torch.zeros_like(p, memory_format=torch.preserve_format)
        states = [self.state[p] for p in params]
        for st in states:
            st["step"] += 1
        return group, params, [p.grad for p in params], states

    def state_dict(self) -> dict:
        group = self.param_groups[0]
        index = {id(p): i for i, p in enumerate(group["params"])}
        hyper = {k: v for k, v in group.items() if k != "params"}
        return {
            "state": {index[id(p)]: dict(st) for p, st in self.state.items()},
            "param_groups": [{**hyper, "params": list(range(len(index)))}],
        }

    def load_state_dict(self, saved: dict) -> None:
        group, (saved_group,) = self.param_groups[0], saved["param_groups"]
        params = group["params"]
        if len(saved_group["params"]) != len(params):
            raise ValueError(
                f"{len(saved_group['params'])} parameters saved, this network has {len(params)}"
            )
        for key, value in self.FIXED.items():
            if key != "foreach" and saved_group.get(key, value) != value:
                raise ValueError(f"{key}={saved_group[key]!r} is not supported (only {value!r})")
        state = {}
        for i, st in saved["state"].items():
            if not st:
                continue
            p = params[saved_group["params"].index(int(i))]
            state[p] = {"step": torch.tensor(float(st["step"]))}
            for name in self.STATISTICS:
                if st[name].shape != p.shape:
                    raise ValueError(
                        f"{name} of shape {tuple(st[name].shape)} for a weight of {tuple(p.shape)}"
                    )
                state[p][name] = st[name].to(device=p.device, dtype=p.dtype, copy=True)
        self.state = state
        group.update({k: saved_group[k] for k in group if k != "params" and k in saved_group})


class RMSprop(_Local):
    """torch.optim.RMSprop without momentum or centering: s <- alpha s + (1 - alpha) g^2,
    w <- w - lr g / (sqrt(s) + eps)."""

    STATISTICS = ("square_avg",)
    FIXED = {**_Local.FIXED, "momentum": 0, "centered": False}

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8):
        super().__init__(params, lr=lr, alpha=alpha, eps=eps)

    @torch.no_grad()
    def step(self) -> None:
        group, params, grads, states = self._with_grads()
        if not params:
            return
        square_avgs = [st["square_avg"] for st in states]
        torch._foreach_mul_(square_avgs, group["alpha"])
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - group["alpha"])
        avg = torch._foreach_sqrt(square_avgs)
        torch._foreach_add_(avg, group["eps"])
        torch._foreach_addcdiv_(params, grads, avg, value=-group["lr"])


class Adam(_Local):
    """torch.optim.Adam (no weight decay, no amsgrad): m <- lerp(m, g, 1 - b1),
    v <- b2 v + (1 - b2) g^2, w <- w - lr / (1 - b1^t) m / (sqrt(v / (1 - b2^t)) + eps)."""

    STATISTICS = ("exp_avg", "exp_avg_sq")
    FIXED = {**_Local.FIXED, "amsgrad": False, "fused": None, "decoupled_weight_decay": False}

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps)

    @torch.no_grad()
    def step(self) -> None:
        group, params, grads, states = self._with_grads()
        if not params:
            return
        (b1, b2), lr = group["betas"], group["lr"]
        exp_avgs = [st["exp_avg"] for st in states]
        exp_avg_sqs = [st["exp_avg_sq"] for st in states]
        torch._foreach_lerp_(exp_avgs, grads, 1 - b1)
        torch._foreach_mul_(exp_avg_sqs, b2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - b2)
        steps = [float(st["step"]) for st in states]
        step_sizes = [-(lr / (1 - b1**t)) for t in steps]
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, [(1 - b2**t) ** 0.5 for t in steps])
        torch._foreach_add_(denom, group["eps"])
        torch._foreach_addcdiv_(params, exp_avgs, denom, step_sizes)


def make_optimizer(algo_cfg, params):
    """algo.optimizer -> the optimizer over `params` with algo.lr / eps / rmsprop_alpha."""
    a, params = algo_cfg, list(params)
    if a.optimizer == "shared_adam":
        return SharedAdam(params, lr=a.lr, eps=a.eps)
    if a.optimizer == "shared_rmsprop":
        form = getattr(a, "rmsprop_form", "torch")  # A3C's key
        return SharedRMSprop(params, lr=a.lr, alpha=a.rmsprop_alpha, eps=a.eps, form=form)
    if a.optimizer == "adam":
        return Adam(params, lr=a.lr, eps=a.eps)
    # pg-pong's too: cache = decay * cache + (1 - decay) g^2; w -= lr g / (sqrt(cache) + eps)
    return RMSprop(params, lr=a.lr, alpha=a.rmsprop_alpha, eps=a.eps)


class LinearLR:
    """algo.lr_decay: `linear` holds algo.lr up to algo.lr_decay_from frames (0 by default), then
    decays it linearly to 0 at total_frames; `none` keeps it."""

    def __init__(self, algo_cfg, total_frames: int):
        self.base_lr = float(algo_cfg.lr)
        self.total_frames = int(total_frames)
        self.start = int(algo_cfg.lr_decay_from)
        # a budget that ends before the decay would start keeps the lr
        self.decay = algo_cfg.lr_decay == "linear" and self.start < self.total_frames

    def __call__(self, frames: int) -> float:
        if not self.decay or frames <= self.start:
            return self.base_lr
        left = (self.total_frames - frames) / (self.total_frames - self.start)
        return self.base_lr * max(0.0, left)

    def apply(self, optimizer, frames: int) -> float:
        """Set the learning rate for an update made at `frames`; returns it."""
        lr = self(frames)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr


def clip_gradients(params, max_norm: float) -> dict[str, torch.Tensor]:
    """Clip the gradients' global norm to algo.max_grad_norm (0: off); {"grad_norm": before}."""
    if max_norm <= 0:
        return {}
    return {"grad_norm": torch.nn.utils.clip_grad_norm_(params, max_norm)}
