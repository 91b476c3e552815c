"""Actor-Critic on N synchronous envs (A2C; Mnih et al. 2016, the synchronous variant).

Every `n_steps` steps of `num_envs` envs, one update of a shared trunk with policy and value heads:
    loss = -mean(log pi(a_t|s_t) Psi_t) + c * mean((target_t - V(s_t))^2) / 2 - beta * mean(H(pi(.|s_t)))
where Psi_t is the seed's TD residual, Q estimate (n-step return), advantage (n-step return - V)
or GAE(lambda) (`algo.psi`), bootstrapped from V(s_{t+n}) and from V(final obs) at time limits.
The rollout forward pass keeps its graph, so each sample is forwarded once.
"""

from __future__ import annotations

import torch

from pixelrl.checkpoint import learner_state, restore_learner
from pixelrl.config import settings
from pixelrl.device import use_bf16
from pixelrl.envs import TRAIN, make_vector_env
from pixelrl.errors import ConfigError
from pixelrl.evaluate import act_fn
from pixelrl.models import ActorCritic
from pixelrl.optim import LinearLR, clip_gradients, make_optimizer
from pixelrl.rollout import collect, rollout_losses
from pixelrl.run import Run


def make_policy(cfg, obs_space, action_space) -> ActorCritic:
    return ActorCritic(cfg.model, obs_space, action_space.n)


def check(cfg) -> None:
    a = cfg.algo
    if a.num_envs % a.env_groups:
        raise ConfigError(
            f"algo.env_groups={a.env_groups} must divide algo.num_envs={a.num_envs} "
            "(each group steps num_envs / env_groups envs)"
        )


def train(run: Run) -> None:
    cfg, a, device = run.cfg, settings(run.cfg.algo), run.device
    per_group = a.num_envs // a.env_groups
    groups = [make_vector_env(cfg.env, per_group, mode=TRAIN) for _ in range(a.env_groups)]
    envs = groups[0]
    run.set_spaces(envs.single_observation_space, envs.single_action_space)
    net = make_policy(cfg, envs.single_observation_space, envs.single_action_space).to(device)
    optimizer = make_optimizer(a, net.parameters())
    schedule = LinearLR(a, cfg.total_frames)
    frames = run.start_frames
    if run.resume:
        restore_learner(run.resume, {"policy": net}, {"policy": optimizer})

    frames_per_step = envs.frames_per_step * a.num_envs
    act = act_fn(net, device)
    bf16 = use_bf16(a.precision, device, convolutional=cfg.model.trunk != "mlp")

    def state():
        return learner_state({"policy": net}, {"policy": optimizer})

    def on_episodes(info, t):
        run.tracker.episodes_from_info(frames + t * frames_per_step, info)

    # env i of the whole rollout gets seed + i, however the envs are grouped
    obs = [
        torch.as_tensor(g.reset(seed=cfg.seed + i * per_group)[0], device=device)
        for i, g in enumerate(groups)
    ]
    try:
        while not run.done(frames):
            rollout, obs = collect(
                net, groups, obs, a.n_steps, device, on_episodes, bf16, reuse=a.epochs > 1
            )
            frames += a.n_steps * frames_per_step
            for loss, metrics in rollout_losses(net, rollout, a, device, bf16):
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                metrics.update(clip_gradients(net.parameters(), a.max_grad_norm))
                metrics["lr"] = schedule.apply(optimizer, frames)
                optimizer.step()
            run.step_done(frames, metrics, act, state)
        run.finish(frames, act, state)
    finally:
        for g in groups:
            g.close()
