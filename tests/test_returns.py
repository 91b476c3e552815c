"""Pure return / advantage math against hand-computed numbers."""

import numpy as np
import pytest
import torch

from pixelrl.returns import (
    actor_critic_targets,
    episode_returns,
    gae,
    normalize_returns,
    nstep_returns,
    reward_to_go,
    standardize,
    td_residuals,
    total_return,
)

G = 0.9


def col(*xs, dtype=torch.float32):
    """A (T, 1) tensor: one env."""
    return torch.tensor(xs, dtype=dtype).reshape(-1, 1)


def flags(*xs):
    return col(*xs, dtype=torch.bool)


def test_nstep_returns_no_episode_end_bootstraps_from_last_value():
    r = col(1.0, 0.0, 2.0)
    nv = col(10.0, 20.0, 5.0)  # V(s1), V(s2), V(s3); only V(s3) bootstraps
    q = nstep_returns(r, nv, flags(0, 0, 0), flags(0, 0, 0), G)
    q2 = 2 + G * 5
    q1 = 0 + G * q2
    q0 = 1 + G * q1
    assert torch.allclose(q.squeeze(), torch.tensor([q0, q1, q2]))


def test_nstep_returns_terminal_stops_bootstrap():
    r = col(1.0, 1.0, 1.0)
    nv = col(7.0, 99.0, 3.0)  # 99 = V after the terminal step: must be ignored
    q = nstep_returns(r, nv, flags(0, 1, 0), flags(0, 0, 0), G)
    assert torch.allclose(q.squeeze(), torch.tensor([1 + G * 1, 1.0, 1 + G * 3]))


def test_nstep_returns_truncated_bootstraps_from_final_obs_value():
    r = col(1.0, 1.0, 1.0)
    nv = col(7.0, 4.0, 3.0)  # nv[1] = V(final obs) of the truncated episode
    q = nstep_returns(r, nv, flags(0, 0, 0), flags(0, 1, 0), G)
    q1 = 1 + G * 4
    assert torch.allclose(q.squeeze(), torch.tensor([1 + G * q1, q1, 1 + G * 3]))


def test_td_residuals_mask_only_terminal():
    r, v, nv = col(1.0, 2.0), col(0.5, 1.0), col(3.0, 4.0)
    d = td_residuals(r, v, nv, flags(0, 1), G)
    assert torch.allclose(d.squeeze(), torch.tensor([1 + G * 3 - 0.5, 2 - 1.0]))


def test_gae_hand_computed_with_episode_end():
    r, v, nv = col(1.0, 0.0, 1.0), col(0.5, 0.2, 0.1), col(0.2, 9.0, 0.3)
    term, trunc = flags(0, 1, 0), flags(0, 0, 0)
    lam = 0.8
    d0 = 1 + G * 0.2 - 0.5
    d1 = 0 - 0.2  # terminal
    d2 = 1 + G * 0.3 - 0.1
    a2 = d2
    a1 = d1  # the episode ended at t=1: A_1 does not see t=2
    a0 = d0 + G * lam * a1
    out = gae(r, v, nv, term, trunc, G, lam)
    assert torch.allclose(out.squeeze(), torch.tensor([a0, a1, a2]))


def test_gae_lambda_limits():
    torch.manual_seed(0)
    r, v, nv = torch.randn(6, 3), torch.randn(6, 3), torch.randn(6, 3)
    nv[:-1] = v[1:]  # a consistent rollout with no episode ends
    term = torch.zeros(6, 3, dtype=torch.bool)
    term[2, 1] = True
    trunc = torch.zeros(6, 3, dtype=torch.bool)
    trunc[4, 2] = True
    nv[4, 2] = 0.7
    assert torch.allclose(gae(r, v, nv, term, trunc, G, 0.0), td_residuals(r, v, nv, term, G))
    q = nstep_returns(r, nv, term, trunc, G)
    assert torch.allclose(gae(r, v, nv, term, trunc, G, 1.0), q - v, atol=1e-5)


@pytest.mark.parametrize("psi", ["td", "q", "advantage", "gae"])
def test_actor_critic_targets_choices(psi):
    r, v, nv = col(1.0, 2.0), col(0.5, 1.0), col(1.0, 3.0)
    term, trunc = flags(0, 0), flags(0, 0)
    out, target = actor_critic_targets(psi, r, v, nv, term, trunc, G, 0.95)
    q = torch.tensor([1 + G * (2 + G * 3), 2 + G * 3])
    if psi == "td":
        d = torch.tensor([1 + G * 1 - 0.5, 2 + G * 3 - 1.0])
        assert torch.allclose(out.squeeze(), d)
        assert torch.allclose(target.squeeze(), d + v.squeeze())
    elif psi == "q":
        assert torch.allclose(out.squeeze(), q)
        assert torch.allclose(target.squeeze(), q)
    elif psi == "advantage":
        assert torch.allclose(out.squeeze(), q - v.squeeze())
    else:
        d1 = 2 + G * 3 - 1.0
        d0 = 1 + G * 1 - 0.5
        a = torch.tensor([d0 + G * 0.95 * d1, d1])
        assert torch.allclose(out.squeeze(), a)
        assert torch.allclose(target.squeeze(), a + v.squeeze())


def test_actor_critic_targets_rejects_unknown():
    with pytest.raises(ValueError, match="algo.psi='nope'"):
        actor_critic_targets("nope", col(1.0), col(1.0), col(1.0), flags(0), flags(0), G, 0.9)


# ---------------------------------------------------------------- Monte-Carlo (REINFORCE)


def test_reward_to_go_plain():
    r = np.array([0.0, 0.0, 1.0, 0.0, -1.0])
    g4 = -1
    g3 = G * g4
    g2 = 1 + G * g3
    g1 = G * g2
    g0 = G * g1
    assert np.allclose(reward_to_go(r, G), [g0, g1, g2, g3, g4])


def test_reward_to_go_resets_on_reward_like_pg_pong():
    r = np.array([0.0, 0.0, 1.0, 0.0, -1.0])
    # the sum restarts at every nonzero reward: steps 0-2 only see the +1, steps 3-4 the -1
    assert np.allclose(reward_to_go(r, G, reset_on_reward=True), [G * G, G, 1.0, -G, -1.0])


def test_total_return_whole_episode_and_segments():
    r = np.array([0.0, 1.0, 0.0, -1.0])
    whole = 0 + G * 1 + G**2 * 0 + G**3 * -1
    assert np.allclose(total_return(r, G), [whole] * 4)
    # with reset_on_reward each point is its own trajectory
    assert np.allclose(total_return(r, G, reset_on_reward=True), [G, G, -G, -G])
    assert np.allclose(total_return(r, 1.0), [0.0] * 4)


@pytest.mark.parametrize("reset", [False, True])
def test_episode_returns_picks_the_seeds_choice(reset):
    """REINFORCE's Psi before baselines: choice 1 is the whole return, choices 2 and 3 (the
    baseline is subtracted later) the reward-to-go."""
    r = np.array([0.0, 1.0, 0.0, -1.0])
    assert np.array_equal(episode_returns(r, "total", G, reset), total_return(r, G, reset))
    for psi in ("reward_to_go", "baseline"):
        assert np.array_equal(episode_returns(r, psi, G, reset), reward_to_go(r, G, reset))


def test_standardize():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    z = standardize(x)
    assert abs(z.mean()) < 1e-9 and abs(z.std() - 1) < 1e-6
    assert np.all(standardize(np.ones(3)) == 0)


def test_normalization_modes():
    a, b = np.array([1.0, 3.0]), np.array([10.0, 20.0, 30.0])
    none = normalize_returns([a, b], "none")
    assert np.allclose(none[0], a) and np.allclose(none[1], b)
    ep = normalize_returns([a, b], "episode")
    assert np.allclose(ep[0], [-1, 1]) and np.allclose(ep[1], np.array([-1, 0, 1]) * np.sqrt(1.5))
    batch = normalize_returns([a, b], "batch")
    flat = np.concatenate([a, b])
    assert np.allclose(np.concatenate(batch), (flat - flat.mean()) / flat.std())
    assert [len(x) for x in batch] == [2, 3]


def _loss_grads(loss_fn, logits, **kw):
    logits = logits.clone().requires_grad_(True)
    values = torch.zeros(len(logits), requires_grad=True)
    loss, metrics = loss_fn(logits=logits, values=values, **kw)
    loss.backward()
    return logits.grad, metrics


def test_clipped_loss_matches_the_policy_gradient_at_the_acting_policy():
    from pixelrl.losses import clipped_policy_loss, policy_gradient_loss

    torch.manual_seed(0)
    logits, actions = torch.randn(12, 4), torch.randint(0, 4, (12,))
    psi, targets = torch.randn(12), torch.randn(12)
    acted = torch.log_softmax(logits, -1).gather(-1, actions[:, None]).squeeze(-1)
    common = dict(actions=actions, psi=psi, value_targets=targets, entropy_coef=0.01)
    plain, _ = _loss_grads(policy_gradient_loss, logits, **common)
    clipped, metrics = _loss_grads(
        clipped_policy_loss, logits, acted_logp=acted, clip_ratio=0.1, **common
    )
    assert torch.allclose(plain, clipped, atol=1e-6)
    assert float(metrics["clip_fraction"]) == 0.0
    assert abs(float(metrics["approx_kl"])) < 1e-6


def test_clipped_loss_stops_pulling_a_sample_past_the_clip_in_its_favour():
    from pixelrl.losses import clipped_policy_loss

    logits = torch.zeros(2, 2)  # pi(a=0) = 0.5 for both samples
    actions = torch.tensor([0, 0])
    # sample 0 acted at pi 0.4 (ratio 1.25 > 1.1) with Psi > 0: already pushed past the clip;
    # sample 1 acted at pi 0.6 (ratio 0.83 < 0.9) with Psi > 0: still pulled up
    acted = torch.log(torch.tensor([0.4, 0.6]))
    grad, metrics = _loss_grads(
        clipped_policy_loss,
        logits,
        actions=actions,
        acted_logp=acted,
        psi=torch.tensor([1.0, 1.0]),
        value_targets=torch.zeros(2),
        clip_ratio=0.1,
    )
    assert torch.equal(grad[0], torch.zeros(2))
    assert grad[1, 0] < 0 < grad[1, 1]  # descending the loss raises the logit of action 0
    assert float(metrics["clip_fraction"]) == 1.0
