"""Network shapes, scaling and heads."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from pixelrl.config import ModelConfig
from pixelrl.models import (
    CONV_TRUNKS,
    ActorCritic,
    ConvEncoder,
    ConvTrunk,
    FeatureLayer,
    PolicyHead,
    make_trunk,
    num_params,
)

from .conftest import FAST, last_json_line


def model_cfg(**kw):
    return OmegaConf.structured(ModelConfig(**kw))


ATARI = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)


@pytest.mark.parametrize("trunk,flat,hidden", [("nature", 3136, 512), ("a3c", 2592, 256)])
def test_conv_trunks_size_themselves(trunk, flat, hidden):
    t = make_trunk(model_cfg(trunk=trunk), ATARI)
    assert isinstance(t, ConvTrunk)
    assert t.encoder.out_dim == flat and t.out_dim == hidden
    out = t(torch.zeros(5, 4, 84, 84, dtype=torch.uint8))
    assert out.shape == (5, hidden)


@pytest.mark.parametrize(
    "activation,kind,revives",
    [
        ("relu", torch.nn.ReLU, False),
        ("leaky_relu", torch.nn.LeakyReLU, True),
        ("elu", torch.nn.ELU, False),
    ],
)
def test_only_a_leaky_trunk_whose_first_layer_is_all_negative_still_gets_a_gradient(
    activation, kind, revives
):
    """The A3C Pong failure: every conv1 unit negative on every frame. A ReLU trunk then passes
    no gradient to conv1 (it cannot recover) and its policy ignores the screen; ELU's gradient
    exp(x) vanishes as well this far below 0; a leaky ReLU's stays 0.01."""
    net = ActorCritic(model_cfg(trunk="a3c", activation=activation), ATARI, 6)
    conv1 = net.trunk.encoder.convs[0]
    with torch.no_grad():
        conv1.bias.fill_(-100.0)  # no screen can lift a pre-activation above 0
    obs = torch.randint(0, 256, (4, 4, 84, 84), dtype=torch.uint8)
    logits, value = net(obs)
    (logits.logsumexp(-1).sum() + value.sum()).backward()
    assert (conv1.weight.grad.abs().sum() > 0) == revives
    assert isinstance(net.trunk.encoder.convs[1], kind) and isinstance(net.trunk.fc[1], kind)
    if activation == "relu":  # the dead trunk's outputs no longer depend on the screen
        assert torch.allclose(logits, logits[:1].expand_as(logits))


def test_actor_critic_shapes_and_initial_policy_is_near_uniform():
    net = ActorCritic(model_cfg(trunk="nature"), ATARI, 6)
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    logits, value = net(obs)
    assert logits.shape == (3, 6) and value.shape == (3,)
    probs = logits.softmax(-1)
    assert torch.allclose(probs, torch.full_like(probs, 1 / 6), atol=0.02)  # policy gain 0.01
    assert net.act(obs).shape == (3,)


def test_actor_critic_conv_trunk_is_channels_last_and_computes_what_nchw_does():
    net = ActorCritic(model_cfg(trunk="a3c"), ATARI, 6)
    conv1 = net.trunk.encoder.convs[0]
    assert conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv1.weight.is_contiguous()
    nchw = ActorCritic(model_cfg(trunk="a3c"), ATARI, 6)
    nchw.trunk.encoder.to(memory_format=torch.contiguous_format)
    nchw.load_state_dict(net.state_dict())  # and a checkpoint moves between the two layouts
    assert nchw.trunk.encoder.convs[0].weight.is_contiguous()
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    for a, b in zip(net(obs), nchw(obs), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    fresh = ActorCritic(model_cfg(trunk="a3c"), ATARI, 6)
    fresh.load_state_dict(nchw.state_dict())
    assert fresh.trunk.encoder.convs[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fresh(obs)[0], nchw(obs)[0], rtol=1e-4, atol=1e-5)


def test_model_bias_false_leaves_no_bias_in_a_conv_trunk_or_the_policy():
    net = ActorCritic(model_cfg(trunk="a3c", bias=False), ATARI, 6)
    layers = [m for m in net.trunk.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 3 and all(m.bias is None for m in layers)
    assert net.policy.linear.bias is None
    logits, value = net(torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8))
    assert logits.shape == (2, 6) and value.shape == (2,)
    with_bias = ActorCritic(model_cfg(trunk="a3c"), ATARI, 6)
    assert all(m.bias is not None for m in with_bias.trunk.modules() if hasattr(m, "bias"))


def test_uint8_is_scaled_inside():
    t = make_trunk(model_cfg(trunk="a3c"), ATARI)
    x = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    torch.testing.assert_close(t(x), t(x.float()))  # uint8 and float pixels agree


def test_a_centered_trunk_sees_each_frame_less_its_mean_pixel():
    """model.center: a frame's overall brightness no longer reaches the first layer; the caller's
    observations are left as they were."""
    torch.manual_seed(0)
    x = torch.randint(40, 200, (3, 4, 84, 84), dtype=torch.uint8)
    brighter = x + torch.tensor([10, 20, 0, 30], dtype=torch.uint8)[:, None, None]  # per frame
    plain, centered = (make_trunk(model_cfg(trunk="a3c", center=c), ATARI) for c in (False, True))
    centered.load_state_dict(plain.state_dict())
    torch.testing.assert_close(centered(brighter), centered(x))
    assert not torch.allclose(plain(brighter), plain(x))
    # centering changes what the first layer sees and nothing else: x / 255 less its mean, per frame
    scaled = x.float() / 255
    expected = plain.fc(plain.encoder.convs(scaled - scaled.mean(dim=(-2, -1), keepdim=True)))
    torch.testing.assert_close(centered(x), expected)
    floats = x.float()
    centered(floats)
    assert torch.equal(floats, x.float())


def test_mlp_trunk_on_karpathy_vectors_no_bias_karpathy_init():
    space = gym.spaces.Box(-1.0, 1.0, (6400,), np.float32)
    net = ActorCritic(
        model_cfg(trunk="mlp", hidden=200, bias=False, init="karpathy", policy_head="sigmoid"),
        space,
        2,
        with_value=False,
    )
    w1 = net.trunk.net[1].weight
    assert w1.shape == (200, 6400) and net.trunk.net[1].bias is None
    assert abs(w1.std().item() - 1 / np.sqrt(6400)) < 0.001
    assert num_params(net) == 6400 * 200 + 200  # pg-pong's two weight matrices, nothing else
    x = torch.randn(4, 6400)
    logits, value = net(x)
    assert value is None and logits.shape == (4, 2)
    assert torch.all(logits[:, 1] == 0)


def test_sigmoid_head_equals_pg_pong_probability_and_gradient():
    head = PolicyHead(3, 2, sigmoid=True, bias=False)
    h = torch.randn(5, 3)
    z = head.linear(h).squeeze(-1)
    p_up = torch.sigmoid(z)
    torch.testing.assert_close(head(h).softmax(-1)[:, 0], p_up)
    # d log pi(UP) / dz = 1 - p  (pg-pong's  y - p with y = 1)
    z1 = z.detach().clone().requires_grad_(True)
    logp_up = torch.log_softmax(torch.stack([z1, torch.zeros_like(z1)], -1), -1)[:, 0]
    logp_up.sum().backward()
    torch.testing.assert_close(z1.grad, 1 - torch.sigmoid(z1.detach()))


def test_sigmoid_head_needs_two_actions():
    with pytest.raises(ValueError, match="exactly 2 actions"):
        PolicyHead(4, 3, sigmoid=True)


def test_conv_trunk_on_tiny_images_is_a_clear_error():
    tiny = gym.spaces.Box(0, 255, (1, 20, 10), np.uint8)
    with pytest.raises(ValueError, match="too deep"):
        make_trunk(model_cfg(trunk="nature"), tiny)


def test_mlp_sparse_input_path_is_exact():
    """Difference frames are mostly zeros; the trunk skips zero columns, same values and grads."""
    space = gym.spaces.Box(-1.0, 1.0, (6400,), np.float32)
    net = ActorCritic(model_cfg(trunk="mlp", hidden=200, bias=True), space, 2)
    x = torch.zeros(7, 6400)
    x[torch.randint(0, 7, (300,)), torch.randint(0, 6400, (300,))] = torch.randint(
        -1, 2, (300,)
    ).float()
    dense = net.trunk.net[1:](x)
    sparse = net.trunk(x)
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-6)
    sparse.sum().backward()
    g_sparse = net.trunk.net[1].weight.grad.clone()
    net.zero_grad()
    dense.sum().backward()
    torch.testing.assert_close(g_sparse, net.trunk.net[1].weight.grad, rtol=1e-5, atol=1e-6)


def test_encoder_leaves_a_float_input_as_it_was():
    # uint8 input is scaled in a fresh tensor in place; a float input must not be scaled in place
    enc = ConvEncoder((3, 36, 36), CONV_TRUNKS["drq"][0], 1.0 / 255)
    x = torch.randint(0, 256, (2, 3, 36, 36)).float()
    before = x.clone()
    out = enc(x)
    assert torch.equal(x, before)
    torch.testing.assert_close(out, enc(x.to(torch.uint8)))  # the same scaling either way
    assert (out >= 0).all() and (out > 0).any()  # the ReLUs (in place) still apply


def test_feature_layer_bf16_input_matches_fp32_and_keeps_its_checkpoint_keys():
    torch.manual_seed(0)
    layer = FeatureLayer(4000, 50)
    assert [k for k in layer.state_dict()][:3] == ["0.weight", "0.bias", "1.weight"]
    x = torch.randn(64, 4000).relu()
    full = layer(x)
    half = layer(x.to(torch.bfloat16))
    assert full.dtype == half.dtype == torch.float32
    assert (full - half).abs().max() < 0.05  # bf16 inputs and weights, fp32 accumulation
    half.sum().backward()  # gradients reach the fp32 weights
    assert layer[0].weight.grad.dtype == torch.float32 and layer[0].weight.grad.abs().sum() > 0


def test_trunk_check_tells_a_live_network_from_a_dead_one(cli, tmp_path, capsys):
    """`python -m pixelrl.trunk_check` on a run's checkpoint: alive as trained; dead once every
    first-layer unit is pushed below 0 (the failure it exists to find)."""
    from pixelrl import checkpoint
    from pixelrl.trunk_check import main as trunk_check

    cli(
        "algo=actor_critic",
        "env=Catch",
        "total_frames=2000",
        *FAST,
        "hydra.run.dir=run",
        check=True,
    )
    ck = tmp_path / "run" / "checkpoints" / "last.pt"
    assert trunk_check([str(ck), "steps=40", "every=2"]) == 0
    alive = last_json_line(capsys.readouterr().out)
    assert alive["dead"] is False and alive["frames"] == 20 * 8
    assert alive["policy_std"] > 0 and all(v["active"] > 0 for v in alive["layers"].values())

    payload = checkpoint.load(ck)
    first_bias = next(k for k in payload["models"]["policy"] if k.endswith("bias"))
    payload["models"]["policy"][first_bias].fill_(-100.0)
    checkpoint.save(tmp_path / "dead.pt", payload)
    assert trunk_check([str(tmp_path / "dead.pt"), "steps=40", "every=2"]) == 0
    out = capsys.readouterr().out
    dead = last_json_line(out)
    assert dead["dead"] is True and dead["recoverable"] is False and "cannot recover" in out
    assert next(iter(dead["layers"].values()))["ever_active"] == 0.0

    assert trunk_check([str(ck), "steps=0"]) == 2
    assert "steps='0' must be an integer >= 1" in capsys.readouterr().err
    assert trunk_check([str(tmp_path / "missing.pt")]) == 2
