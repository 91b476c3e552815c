"""The optimizers and the learning-rate schedule every algorithm builds the same way
(pixelrl/optim.py); the shared optimizers' cross-process behaviour is in tests/test_a3c.py."""

import pytest
import torch
from omegaconf import OmegaConf

from pixelrl.config import ActorCriticConfig, DDPGConfig, ReinforceConfig
from pixelrl.optim import LinearLR, SharedAdam, SharedRMSprop, clip_gradients, make_optimizer


@pytest.mark.parametrize(
    "optimizer,cls",
    [
        ("rmsprop", torch.optim.RMSprop),
        ("adam", torch.optim.Adam),
        ("shared_rmsprop", SharedRMSprop),
        ("shared_adam", SharedAdam),
    ],
)
def test_make_optimizer_builds_what_algo_optimizer_names(optimizer, cls):
    a = OmegaConf.structured(ActorCriticConfig(optimizer=optimizer, lr=3e-4, eps=1e-6))
    opt = make_optimizer(a, torch.nn.Linear(3, 2).parameters())
    assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == 3e-4


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
    from pixelrl.config import A3CConfig

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
