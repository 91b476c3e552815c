"""Dormant trunk units and their recycling (ReDo, pixelrl/dormant.py; A3C's algo.recycle_every)."""

import gymnasium as gym
import pytest
import torch

from pixelrl import compose_config
from pixelrl.dormant import recycle_dormant, unit_scores
from pixelrl.models import ActorCritic
from pixelrl.optim import SharedAdam, SharedRMSprop

from .conftest import FAST, metrics

OBS = (4, 84, 84)


def a3c_net(seed: int = 0) -> ActorCritic:
    """The default A3C network for Pong."""
    torch.manual_seed(seed)
    cfg = compose_config(["algo=a3c", "env=Pong"])
    return ActorCritic(cfg.model, gym.spaces.Box(0, 255, OBS, "uint8"), 6)


def frames(n: int = 32, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *OBS), dtype=torch.uint8, generator=g)


def kill_conv1_channel(net: ActorCritic, c: int) -> None:
    conv1 = net.trunk.encoder.convs[0]
    with torch.no_grad():
        conv1.weight[c] = 0
        conv1.bias[c] = -1.0  # negative on every input, centered or not: it never fires


@pytest.mark.parametrize("cls", [SharedRMSprop, SharedAdam])
def test_a_dead_channel_gets_fresh_weights_and_the_network_computes_the_same(cls):
    net, obs = a3c_net(), frames()
    opt = cls(net.parameters(), lr=1e-3)
    g = [torch.rand_like(p) for p in opt.params]
    opt.step(g)  # statistics that are not all equal
    kill_conv1_channel(net, 3)
    conv1, conv2 = net.trunk.encoder.convs[0], net.trunk.encoder.convs[2]
    scores = unit_scores(net, obs)
    assert float(scores[0][3]) == 0.0
    live = [c for c in range(16) if float(scores[0][c]) > 0]
    live2 = [c for c in range(32) if float(scores[1][c]) > 0]  # conv2 channels that stay
    assert len(live2) > 0
    before = [p.detach().clone() for p in net.parameters()]
    with torch.no_grad():
        logits, value = net(obs)
    sq_name = "square_avg" if cls is SharedRMSprop else "exp_avg_sq"
    sq_mean = float(opt.statistics(conv1.weight)[sq_name].mean())

    counts = recycle_dormant(net, obs, opt)

    assert counts[0] >= 1
    assert float(unit_scores(net, obs)[0][3]) > 0  # it fires again
    assert not torch.equal(conv1.weight[3], before[0][3])
    assert float(conv1.bias.detach()[3]) == 0.0
    assert torch.equal(conv1.weight[live], before[0][live])  # live channels are left alone
    # it starts with no say downstream
    assert float(conv2.weight.detach()[live2, 3].abs().sum()) == 0.0
    with torch.no_grad():
        logits2, value2 = net(obs)
    torch.testing.assert_close(logits2, logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(value2, value, rtol=0, atol=1e-6)
    # its optimizer statistics: squared-gradient averages at the layer's mean, first moments 0
    stats = opt.statistics(conv1.weight)
    torch.testing.assert_close(stats[sq_name][3], torch.full_like(stats[sq_name][3], sq_mean))
    if cls is SharedAdam:
        assert float(stats["exp_avg"][3].abs().sum()) == 0.0


def test_a_dead_trunk_comes_back_to_life():
    """Every conv1 channel dead: the features ignore the screen; recycled, they follow it again."""
    net, obs = a3c_net(), frames()
    for c in range(16):
        kill_conv1_channel(net, c)
    with torch.no_grad():
        assert float(net(obs)[1].std()) == 0.0
    counts = recycle_dormant(net, obs)
    assert counts[0] == 16
    assert all(float(s) > 0 for s in unit_scores(net, obs)[0])


def test_the_dead_layers_scope_leaves_a_live_trunk_alone_and_revives_a_dead_one():
    net, obs = a3c_net(), frames()
    kill_conv1_channel(net, 3)  # one dormant channel: the layer lives
    before = [p.detach().clone() for p in net.parameters()]
    assert recycle_dormant(net, obs, scope="dead_layers") == [0, 0, 0]
    assert all(torch.equal(p, b) for p, b in zip(net.parameters(), before))
    for c in range(16):
        kill_conv1_channel(net, c)
    assert recycle_dormant(net, obs, scope="dead_layers")[0] == 16
    assert all(float(s) > 0 for s in unit_scores(net, obs)[0])


def test_a_dead_mlp_layer_comes_back_to_life():
    """The mlp trunk (Catch's): a dead first layer, and the layer above it that only reads it, are
    recycled as wholes; the network computes what it did, and the first layer fires again."""
    from pixelrl.envs import TRAIN, make_vector_env

    cfg = compose_config(["algo=a3c", "env=Catch", "model.mlp_layers=2"])
    envs = make_vector_env(cfg.env, 8, mode=TRAIN, num_threads=1)
    obs = torch.as_tensor(envs.reset(seed=0)[0])
    torch.manual_seed(0)
    net = ActorCritic(cfg.model, envs.single_observation_space, envs.single_action_space.n)
    envs.close()
    assert recycle_dormant(net, obs, scope="dead_layers") == [0, 0]
    first = net.trunk.net[1]
    with torch.no_grad():
        first.weight.copy_(-first.weight.abs())
        first.bias.fill_(-1.0)
        logits, value = net(obs)
    assert float(unit_scores(net, obs)[0].sum()) == 0.0
    hidden = first.out_features
    assert recycle_dormant(net, obs, scope="dead_layers") == [hidden, hidden]
    assert float((unit_scores(net, obs)[0] > 0).float().mean()) > 0.25
    with torch.no_grad():
        logits2, value2 = net(obs)
    torch.testing.assert_close(logits2, logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(value2, value, rtol=0, atol=1e-6)


def test_a_live_run_is_the_same_with_and_without_dead_layer_checks(cli, tmp_path):
    """The A3C default checks for dead layers every 500 updates; on a run whose trunk lives, it
    must compute exactly what a run without the checks does."""
    runs = {}
    for every in (0, 3):
        cli(
            "algo=a3c",
            "env=Catch",
            "algo.num_workers=0",
            f"algo.recycle_every={every}",
            "total_frames=3000",
            "logger.fps_every_s=0",  # losses logged after every update
            "eval.every_frames=0",
            "eval.final=false",
            *FAST,
            f"hydra.run.dir=run{every}",
            check=True,
        )
        rows = [r for r in metrics(tmp_path / f"run{every}") if "losses/policy_loss" in r]
        runs[every] = rows
    assert len(runs[3]) == len(runs[0]) >= 2
    checked = [r["losses/recycled_units_0"] for r in runs[3] if "losses/recycled_units_0" in r]
    assert checked and all(n == 0 for n in checked)
    for a, b in zip(runs[0], runs[3]):
        for key in ("losses/policy_loss", "losses/value_loss", "losses/entropy"):
            assert a[key] == b[key], key


def test_a_tau_recycles_the_weakest_units_only():
    net, obs = a3c_net(), frames()
    scores = unit_scores(net, obs)[0]
    tau = float(scores.sort().values[2] / scores.mean()) + 1e-6  # the three weakest channels
    weakest = scores.argsort()[:3]
    before = net.trunk.encoder.convs[0].weight.detach().clone()
    assert recycle_dormant(net, obs, tau=tau)[0] == 3
    after = net.trunk.encoder.convs[0].weight.detach()
    changed = [c for c in range(16) if not torch.equal(after[c], before[c])]
    assert sorted(changed) == sorted(weakest.tolist())


def test_an_a3c_run_recycles_and_logs_it(cli, tmp_path):
    cli(
        "algo=a3c",
        "env=Pong",
        "algo.num_workers=0",
        "algo.recycle_every=5",
        "algo.recycle_scope=units",
        "total_frames=4000",
        "eval.every_frames=0",
        "eval.final=false",
        *FAST,
        "hydra.run.dir=run",
        check=True,
    )
    rows = [r for r in metrics(tmp_path / "run") if "losses/recycled_units_0" in r]
    assert rows, "no recycling was logged"
    assert all(r["losses/recycled_units_2"] >= 0 for r in rows)
