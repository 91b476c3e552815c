"""The optimizers and the learning-rate schedule every algorithm builds the same way
(pixelrl/optim.py); the shared optimizers' cross-process behaviour is in tests/test_a3c.py."""

import copy
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from pixelrl.config import A3CConfig, ActorCriticConfig, DDPGConfig, ReinforceConfig
from pixelrl.optim import (
    Adam,
    LinearLR,
    RMSprop,
    SharedAdam,
    SharedRMSprop,
    clip_gradients,
    make_optimizer,
)


@pytest.mark.parametrize(
    "optimizer,cls",
    [
        ("rmsprop", RMSprop),
        ("adam", Adam),
        ("shared_rmsprop", SharedRMSprop),
        ("shared_adam", SharedAdam),
    ],
)
def test_make_optimizer_builds_what_algo_optimizer_names(optimizer, cls):
    a = OmegaConf.structured(ActorCriticConfig(optimizer=optimizer, lr=3e-4, eps=1e-6))
    opt = make_optimizer(a, torch.nn.Linear(3, 2).parameters())
    assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == 3e-4


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 3)
    )


def _train(net, opt, steps: int, seed: int, lr_at=None) -> None:
    """`steps` updates on random batches (a fixed stream per seed); a frozen last layer some of
    the time, so that steps skip a parameter without a gradient as they do in DDPG's actor."""
    g = torch.Generator().manual_seed(seed)
    for i in range(steps):
        x = torch.randn(8, 2, 6, 6, generator=g)
        opt.zero_grad(set_to_none=True)
        if lr_at is not None:
            for group in opt.param_groups:
                group["lr"] = lr_at(i)
        net[3].requires_grad_(i % 3 != 2)
        net(x).pow(2).mean().backward()
        opt.step()
    net[3].requires_grad_(True)


def _resumed(net, opt, make):
    """A fresh network and optimizer (`make`) from `net`'s weights and `opt`'s state_dict, as a
    resume from a checkpoint file builds them."""
    twin = _net(0)
    twin.load_state_dict(net.state_dict())
    twin_opt = make(twin.parameters())
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    return twin, twin_opt


def _assert_same(x, y) -> None:
    for p, q in zip(x.parameters(), y.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (
            lambda p: RMSprop(p, lr=7e-4, alpha=0.99, eps=1e-5),
            lambda p: torch.optim.RMSprop(p, lr=7e-4, alpha=0.99, eps=1e-5),
        ),
        (lambda p: Adam(p, lr=1e-3, eps=1e-8), lambda p: torch.optim.Adam(p, lr=1e-3, eps=1e-8)),
    ],
    ids=["rmsprop", "adam"],
)
def test_rmsprop_and_adam_are_torch_optims_weight_for_weight(ours, theirs):
    """Ours against torch.optim's on the same gradients: equal weights after every run (with a
    changing lr and steps that skip a parameter), and a torch.optim state_dict (what older
    checkpoints hold) loads into ours and goes on exactly as torch's own would."""
    a, b = _net(0), _net(0)
    opt_a, opt_b = ours(a.parameters()), theirs(b.parameters())
    decay = lambda i: 1e-3 * (1 - i / 40)  # noqa: E731
    _train(a, opt_a, 30, seed=1, lr_at=decay)
    _train(b, opt_b, 30, seed=1, lr_at=decay)
    _assert_same(a, b)

    c, opt_c = _resumed(b, opt_b, ours)
    _train(b, opt_b, 10, seed=2)
    _train(c, opt_c, 10, seed=2)
    _assert_same(b, c)
    d, opt_d = _resumed(c, opt_c, ours)  # and ours round-trips through its own state_dict
    _train(c, opt_c, 5, seed=3)
    _train(d, opt_d, 5, seed=3)
    _assert_same(c, d)


def test_a_state_dict_of_another_network_is_refused():
    opt = Adam(_net(0).parameters())
    other = torch.nn.Linear(3, 2)
    theirs = torch.optim.Adam(other.parameters())
    other(torch.ones(1, 3)).sum().backward()
    theirs.step()
    with pytest.raises(ValueError, match="parameters saved"):
        opt.load_state_dict(theirs.state_dict())
    same_count = torch.nn.Sequential(
        torch.nn.Conv2d(2, 5, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(5 * 16, 3)
    )
    small = Adam(same_count.parameters())
    same_count(torch.ones(1, 2, 6, 6)).sum().backward()
    small.step()
    with pytest.raises(ValueError, match="exp_avg of shape"):
        opt.load_state_dict(small.state_dict())
    net = _net(0)
    amsgrad = torch.optim.Adam(net.parameters(), amsgrad=True)
    with pytest.raises(ValueError, match="amsgrad=True is not supported"):
        Adam(net.parameters()).load_state_dict(amsgrad.state_dict())


def test_a_state_dict_of_ours_steps_in_torch_optim_too():
    """A checkpoint written here resumes in a checkout that still used torch.optim."""
    a = _net(0)
    ours = Adam(a.parameters(), lr=1e-3)
    _train(a, ours, 5, seed=1)
    b, theirs = _resumed(a, ours, lambda p: torch.optim.Adam(p, lr=1e-3))
    _train(a, ours, 5, seed=2)
    _train(b, theirs, 5, seed=2)
    _assert_same(a, b)


def test_a_training_process_never_imports_torch_dynamo():
    """torch.optim's first use imports torch._dynamo, ~1.7 s of CPU per run (2-core EPYC); the
    optimizers every algorithm builds, their schedule, clipping and checkpoint state do not."""
    script = """
import sys, torch
from omegaconf import OmegaConf
from pixelrl.config import ActorCriticConfig
from pixelrl.optim import LinearLR, clip_gradients, make_optimizer
for name in ("rmsprop", "adam", "shared_rmsprop", "shared_adam"):
    a = OmegaConf.structured(ActorCriticConfig(optimizer=name))
    net = torch.nn.Linear(3, 2)
    opt = make_optimizer(a, net.parameters())
    LinearLR(a, 100).apply(opt, 10)
    net(torch.ones(1, 3)).sum().backward()
    clip_gradients(net.parameters(), 0.5)
    opt.step([p.grad for p in net.parameters()]) if name.startswith("shared") else opt.step()
    opt.load_state_dict(opt.state_dict())
print("torch._dynamo" in sys.modules)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


@pytest.mark.parametrize("optimizer", ["rmsprop", "shared_rmsprop"])
def test_the_schedule_sets_the_lr_the_next_step_uses(optimizer):
    """LinearLR.apply before step(): the step at 50 of 100 frames moves by half of lr."""
    a = OmegaConf.structured(ActorCriticConfig(optimizer=optimizer, lr=0.1, lr_decay="linear"))
    net = torch.nn.Linear(1, 1, bias=False)
    net.weight.data.fill_(0.0)
    opt = make_optimizer(a, net.parameters())
    schedule = LinearLR(a, total_frames=100)
    assert schedule(0) == 0.1 and schedule(50) == pytest.approx(0.05) and schedule(200) == 0.0
    assert schedule.apply(opt, 50) == pytest.approx(0.05)
    grad = torch.ones_like(net.weight)
    if optimizer.startswith("shared"):
        opt.step([grad])
    else:
        net.weight.grad = grad
        opt.step()
    # RMSProp's first step: g / sqrt((1 - alpha) g^2) = 10 for alpha 0.99, times lr
    assert float(net.weight.detach()) == pytest.approx(-0.05 * 10, rel=1e-3)


def test_rmsprop_forms_first_step_and_a_gradient_back_after_a_long_quiet():
    """algo.rmsprop_form: PyTorch's first step is 10 lr and a weight whose gradient returns
    after many near-zero ones jumps by about lr g / (|g_before| + eps); TensorFlow's (s from 1,
    eps inside the root) follows its formula exactly and stays small in both cases."""

    def run(form: str, grads: list[float]) -> list[float]:
        a = OmegaConf.structured(A3CConfig(lr=0.01, rmsprop_form=form))
        w = torch.zeros(1)
        opt = make_optimizer(a, [w])
        moves = []
        for g in grads:
            before = float(w)
            opt.step([torch.tensor([g])])
            moves.append(float(w) - before)
        return moves

    assert run("torch", [1.0]) == pytest.approx([-0.01 * 10], rel=1e-3)
    s, tf_moves = 1.0, []
    for g in [1.0, 0.5, -2.0]:  # s <- 0.99 s + 0.01 g^2;  w -= lr g / sqrt(s + 1e-5)
        s = 0.99 * s + 0.01 * g * g
        tf_moves.append(-0.01 * g / (s + 1e-5) ** 0.5)
    assert run("tf", [1.0, 0.5, -2.0]) == pytest.approx(tf_moves, rel=1e-5)

    quiet_then_back = [1e-6] * 2000 + [1e-2]
    assert abs(run("torch", quiet_then_back)[-1]) > 0.01 * 5  # 5 lr and more, in one step
    assert abs(run("tf", quiet_then_back)[-1]) < 0.01 * 5
    with pytest.raises(ValueError):
        SharedRMSprop([torch.zeros(1)], form="keras")


@pytest.mark.parametrize("schema", [A3CConfig, ReinforceConfig, DDPGConfig])
def test_a_decay_from_a_frame_holds_the_lr_until_it(schema):
    """algo.lr_decay_from=60: lr until frame 60, then linearly to 0 at total_frames=100."""
    a = OmegaConf.structured(schema(lr=0.4, lr_decay="linear", lr_decay_from=60))
    schedule = LinearLR(a, total_frames=100)
    lrs = [schedule(f) for f in (0, 30, 60, 70, 90, 100, 120)]
    assert lrs == pytest.approx([0.4, 0.4, 0.4, 0.3, 0.1, 0.0, 0.0])
    held = LinearLR(a, total_frames=50)  # a budget that ends before the decay would start
    assert [held(f) for f in (0, 49, 50, 51)] == [0.4, 0.4, 0.4, 0.4]


@pytest.mark.parametrize("schema", [ReinforceConfig, DDPGConfig])
def test_no_decay_keeps_the_lr(schema):
    a = OmegaConf.structured(schema(lr_decay="none", lr=2e-4))
    assert LinearLR(a, 1000)(999) == 2e-4


def test_clip_gradients_reports_the_norm_before_clipping():
    net = torch.nn.Linear(2, 1, bias=False)
    net.weight.grad = torch.tensor([[3.0, 4.0]])
    assert clip_gradients(net.parameters(), 0.0) == {}
    out = clip_gradients(net.parameters(), 1.0)
    assert float(out["grad_norm"]) == pytest.approx(5.0)
    assert float(net.weight.grad.norm()) == pytest.approx(1.0, rel=1e-5)


def test_ddpg_decays_the_lr_of_both_its_optimizers(cli, tmp_path):
    """algo.lr_decay=linear reaches DDPG (it used to be ignored there)."""
    from .conftest import FAST, metrics

    cli(
        "algo=ddpg",
        "env=Reach",
        "algo.lr_decay=linear",
        "algo.lr=1e-3",
        "total_frames=600",
        "algo.warmup_frames=100",
        "eval.every_frames=0",
        "eval.final=false",
        "logger.fps_every_s=0",
        *FAST,
        "hydra.run.dir=run",
        check=True,
    )
    lrs = [r["losses/lr"] for r in metrics(tmp_path / "run") if "losses/lr" in r]
    assert lrs and lrs == sorted(lrs, reverse=True) and lrs[0] < 1e-3 and lrs[-1] < 0.2e-3
    from pixelrl import checkpoint

    opts = checkpoint.load(tmp_path / "run")["optimizers"]
    assert opts["actor"]["param_groups"][0]["lr"] == opts["critic"]["param_groups"][0]["lr"]
