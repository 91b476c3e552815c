"""Actor-Critic on N synchronous envs (A2C; Mnih et al. 2016, the synchronous variant).

Every `n_steps` steps of `num_envs` envs, one update of a shared trunk with policy and value heads:
    loss = -mean(log pi(a_t|s_t) Psi_t) + c * mean((target_t - V(s_t))^2) / 2 - beta * mean(H(pi(.|s_t)))
where Psi_t is the seed's TD residual, Q estimate (n-step return), advantage (n-step return - V)
or GAE(lambda) (`algo.psi`), bootstrapped from V(s_{t+n}) and from V(final obs) at time limits.
The rollout forward pass keeps its graph, so each sample is forwarded once.
"""

from __future__ import annotations

import torch

from pixelrl.device import use_bf16
from pixelrl.envs import TRAIN, make_vector_env
from pixelrl.evaluate import act_fn
from pixelrl.models import ActorCritic
from pixelrl.rollout import collect, loss_from_rollout
from pixelrl.run import Run, linear_lr, set_lr


def make_policy(cfg, obs_space, action_space) -> ActorCritic:
    return ActorCritic(cfg.model, obs_space, action_space.n)


def make_optimizer(algo_cfg, params):
    if algo_cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=algo_cfg.lr, eps=algo_cfg.eps)
    return torch.optim.RMSprop(
        params, lr=algo_cfg.lr, alpha=algo_cfg.rmsprop_alpha, eps=algo_cfg.eps
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
    bf16 = use_bf16(a.precision, device)

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
            rollout, obs = collect(net, envs, obs, a.n_steps, device, on_episodes, bf16)
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
