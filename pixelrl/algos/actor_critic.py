"""Actor-Critic on N synchronous envs (A2C; Mnih et al. 2016, the synchronous variant).

Every `n_steps` steps of `num_envs` envs, one update of a shared trunk with policy and value heads:
    loss = -mean(log pi(a_t|s_t) Psi_t) + c * mean((target_t - V(s_t))^2) / 2 - beta * mean(H(pi(.|s_t)))
where Psi_t is the seed's TD residual, Q estimate (n-step return), advantage (n-step return - V)
or GAE(lambda) (`algo.psi`), bootstrapped from V(s_{t+n}) and from V(final obs) at time limits.
The rollout forward pass keeps its graph, so each sample is forwarded once.
"""

from __future__ import annotations

import torch

from pixelrl.envs import TRAIN, make_vector_env
from pixelrl.evaluate import act_fn
from pixelrl.losses import policy_gradient_loss
from pixelrl.models import ActorCritic
from pixelrl.returns import actor_critic_targets
from pixelrl.run import Run, linear_lr, set_lr


def make_policy(cfg, obs_space, action_space) -> ActorCritic:
    return ActorCritic(cfg.model, obs_space, action_space.n)


def make_optimizer(algo_cfg, params):
    if algo_cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=algo_cfg.lr, eps=algo_cfg.eps)
    return torch.optim.RMSprop(
        params, lr=algo_cfg.lr, alpha=algo_cfg.rmsprop_alpha, eps=algo_cfg.eps
    )


def collect(
    net, envs, obs: torch.Tensor, n_steps: int, device, on_episodes
) -> tuple[dict, torch.Tensor]:
    """Play n_steps on every env with the current policy, keeping the autograd graph.

    Returns the rollout (logits, values, actions, rewards, flags, next_values) and the next obs.
    `on_episodes(info, steps_done)` sees each step's info (episode stats).
    """
    logits_t, values_t, actions_t, rewards_t, term_t, trunc_t = [], [], [], [], [], []
    boot = []  # (t, env indices, V(final obs)) for truncated episodes
    for t in range(n_steps):
        logits, value = net(obs)
        with torch.no_grad():
            action = torch.distributions.Categorical(logits=logits).sample()
        next_obs, reward, terminated, truncated, info = envs.step(action.cpu().numpy())
        on_episodes(info, t + 1)
        if truncated.any():
            idx = truncated.nonzero()[0]
            with torch.no_grad():
                final = torch.as_tensor(info["final_obs"][idx], device=device)
                boot.append((t, torch.as_tensor(idx, device=device), net(final)[1]))
        logits_t.append(logits)
        values_t.append(value)
        actions_t.append(action)
        rewards_t.append(torch.as_tensor(reward, device=device))
        term_t.append(torch.as_tensor(terminated, device=device))
        trunc_t.append(torch.as_tensor(truncated, device=device))
        obs = torch.as_tensor(next_obs, device=device)
    values = torch.stack(values_t)
    with torch.no_grad():
        last_value = net(obs)[1]
        next_values = torch.cat([values[1:].detach(), last_value[None]])
        for t, idx, v in boot:
            next_values[t, idx] = v
    rollout = {
        "logits": torch.stack(logits_t),
        "values": values,
        "actions": torch.stack(actions_t),
        "rewards": torch.stack(rewards_t),
        "terminated": torch.stack(term_t),
        "truncated": torch.stack(trunc_t),
        "next_values": next_values,
    }
    return rollout, obs


def loss_from_rollout(rollout: dict, algo_cfg) -> tuple[torch.Tensor, dict]:
    psi, targets = actor_critic_targets(
        algo_cfg.psi,
        rollout["rewards"],
        rollout["values"].detach(),
        rollout["next_values"],
        rollout["terminated"],
        rollout["truncated"],
        algo_cfg.gamma,
        algo_cfg.gae_lambda,
    )
    n_actions = rollout["logits"].shape[-1]
    return policy_gradient_loss(
        rollout["logits"].reshape(-1, n_actions),
        rollout["actions"].reshape(-1),
        psi.reshape(-1),
        rollout["values"].reshape(-1),
        targets.reshape(-1),
        entropy_coef=algo_cfg.entropy_coef,
        value_coef=algo_cfg.value_coef,
    )


def train(run: Run) -> None:
    cfg, a, device = run.cfg, run.cfg.algo, run.device
    envs = make_vector_env(cfg.env, a.num_envs, mode=TRAIN)
    run.set_spaces(envs.single_observation_space, envs.single_action_space)
    net = make_policy(cfg, envs.single_observation_space, envs.single_action_space).to(device)
    optimizer = make_optimizer(a, net.parameters())
    frames = run.start_frames
    if run.resume:
        net.load_state_dict(run.resume["models"]["policy"])
        optimizer.load_state_dict(run.resume["optimizers"]["policy"])

    frames_per_step = envs.frames_per_step * a.num_envs
    act = act_fn(net, device)

    def state():
        return {
            "models": {"policy": net.state_dict()},
            "optimizers": {"policy": optimizer.state_dict()},
        }

    def on_episodes(info, t):
        run.tracker.episodes_from_info(frames + t * frames_per_step, info)

    obs_np, _ = envs.reset(seed=cfg.seed)
    obs = torch.as_tensor(obs_np, device=device)
    try:
        while not run.done(frames):
            rollout, obs = collect(net, envs, obs, a.n_steps, device, on_episodes)
            frames += a.n_steps * frames_per_step
            loss, metrics = loss_from_rollout(rollout, a)
            lr = linear_lr(a.lr, frames, cfg.total_frames, a.lr_decay)
            set_lr(optimizer, lr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if a.max_grad_norm > 0:
                metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(
                    net.parameters(), a.max_grad_norm
                )
            optimizer.step()
            metrics["lr"] = lr
            run.step_done(frames, metrics, act, state)
        run.finish(frames, act, state)
    finally:
        envs.close()
