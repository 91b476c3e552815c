"""DDPG from pixels (Lillicrap et al. 2015, arXiv:1509.02971) with DrQ-v2's recipe (Yarats et al.
2021, arXiv:2107.09645): a conv encoder f shared by a deterministic actor mu and a critic Q.

Each update samples n-step transitions (s, a, R, g^m, s') from replay, randomly shifted (DrQ):
    critic: (Q(f(s), a) - [R + g^m Q'(f(s'), mu'(f(s')) + clip(eps))])^2   trains Q and f
    actor:  -Q(sg f(s), mu(sg f(s)))                                         the actor reads
                                                                             detached features
    targets mu', Q': soft updates theta' <- tau theta + (1 - tau) theta'
Exploration: a = clip(mu(f(s)) + noise, -1, 1), Gaussian with a linearly decaying std (DrQ-v2)
or Ornstein-Uhlenbeck (the paper); uniform random actions for the first `warmup_frames`.
`double_q` adds a second Q head and takes the min of the targets (clipped double-Q, TD3).
`target_augs` (DrQ's K) averages the target over that many shifts of s', `q_augs` (M) the critic's
loss over that many shifts of s; the actor then trains on all m shifted copies.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from pixelrl.buffers import ReplayBuffer, choose_storage
from pixelrl.checkpoint import learner_state, restore_learner
from pixelrl.config import settings
from pixelrl.device import bf16_features, use_bf16
from pixelrl.envs import TRAIN, make_vector_env
from pixelrl.errors import ConfigError
from pixelrl.evaluate import act_fn
from pixelrl.models import (
    CONV_TRUNKS,
    ActorHead,
    ContinuousActor,
    ConvEncoder,
    QHead,
    init_orthogonal,
    obs_scale,
    to_action_space,
)
from pixelrl.optim import LinearLR, clip_gradients, make_optimizer
from pixelrl.run import Run


def check(cfg) -> None:
    """DDPG's combinations of keys (called by the app with the other config checks)."""
    a = cfg.algo
    if not a.augment:
        for key in ("target_augs", "q_augs"):
            if a[key] > 1:
                raise ConfigError(
                    f"algo.{key}={a[key]} averages over random shifts, but algo.augment=false: "
                    f"the copies would all be the same; set algo.augment=true or algo.{key}=1"
                )


def make_policy(cfg, obs_space, action_space) -> ContinuousActor:
    a = cfg.algo
    try:
        encoder = ConvEncoder(
            tuple(obs_space.shape), CONV_TRUNKS[a.encoder][0], obs_scale(obs_space)
        )
    except RuntimeError:
        raise ConfigError(
            f"algo.encoder={a.encoder} is too deep for {obs_space.shape[1]}x{obs_space.shape[2]} "
            "observations; use a larger env.resolution or algo.encoder=drq"
        ) from None
    init_orthogonal(encoder)
    # channels-last convolutions are 3-6x faster on CPU (oneDNN) and no slower on GPU
    encoder.to(memory_format=torch.channels_last)
    head = ActorHead(encoder.out_dim, int(np.prod(action_space.shape)), a.feature_dim, a.hidden_dim)
    return ContinuousActor(encoder, head, action_space.low, action_space.high)


def random_shift(obs: torch.Tensor, pad: int) -> torch.Tensor:
    """DrQ's augmentation: shift each image by up to `pad` pixels each way, drawn per image, the
    border repeated (= pad by replication, then crop back at a random offset). One row gather of
    the channels-last pixels; the result is channels-last, the layout the conv encoder is
    fastest with on CPU."""
    if pad == 0:
        return obs
    n, c, h, w = obs.shape
    offsets = torch.randint(-pad, pad + 1, (n, 2), device=obs.device)
    rows = (torch.arange(h, device=obs.device) + offsets[:, :1]).clamp(0, h - 1)
    cols = (torch.arange(w, device=obs.device) + offsets[:, 1:]).clamp(0, w - 1)
    # the source pixel of each output pixel, as an index into the (n*h*w, c) pixel rows
    image = torch.arange(n, device=obs.device)[:, None, None] * (h * w)
    source = (image + rows[:, :, None] * w + cols[:, None, :]).reshape(-1)
    pixels = obs.permute(0, 2, 3, 1).reshape(n * h * w, c)
    return pixels.index_select(0, source).view(n, h, w, c).permute(0, 3, 1, 2)


def linear_decay(start: float, end: float, frames: int, decay_frames: int) -> float:
    """start -> end linearly over decay_frames, then end (DrQ-v2's stddev schedule)."""
    return start + (end - start) * min(1.0, frames / decay_frames)


class OUNoise:
    """Ornstein-Uhlenbeck process per env (the DDPG paper: theta 0.15, sigma 0.2, dt 1)."""

    def __init__(self, shape, theta: float, sigma: float):
        self.theta, self.sigma = theta, sigma
        self.state = np.zeros(shape, np.float32)

    def __call__(self) -> np.ndarray:
        self.state += -self.theta * self.state + self.sigma * np.random.randn(*self.state.shape)
        return self.state

    def reset(self, done: np.ndarray) -> None:
        self.state[done] = 0.0


@torch.no_grad()
def soft_update(target: torch.nn.Module, online: torch.nn.Module, tau: float) -> None:
    for t, o in zip(target.parameters(), online.parameters()):
        t.lerp_(o, tau)


class DDPG:
    """The learner: networks, optimizers and one update on a replay batch."""

    def __init__(self, cfg, obs_space, action_space, device):
        a = self.a = settings(cfg.algo)
        self.device = device
        self.actor = make_policy(cfg, obs_space, action_space).to(device)
        self.encoder = self.actor.encoder
        action_dim = int(np.prod(action_space.shape))
        num_q = 2 if a.double_q else 1
        self.critic = QHead(
            self.encoder.out_dim, action_dim, a.feature_dim, a.hidden_dim, num_q
        ).to(device)
        self.actor_target = copy.deepcopy(self.actor.head).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        # The critic's loss trains the encoder; the actor only its head.
        critic_params = [*self.encoder.parameters(), *self.critic.parameters()]
        self.critic_opt = make_optimizer(a, critic_params)
        self.actor_opt = make_optimizer(a, self.actor.head.parameters())
        self.bf16 = use_bf16(a.precision, device)

    def _encode(self, obs: torch.Tensor) -> torch.Tensor:
        """The encoder's features: bf16 with bf16 enabled (the heads' FeatureLayers multiply
        them in bf16 and go on in fp32), else fp32."""
        if not self.bf16:
            return self.encoder(obs)
        return bf16_features(self.encoder, obs, self.device, fp32=False)

    def update(self, batch: dict, smoothing_std: float) -> dict[str, torch.Tensor]:
        """One critic and one actor step on `batch` (ReplayBuffer.sample). Returns 0-d tensors,
        left on the device and read when the losses are logged, not after every update."""
        a, dev = self.a, self.device
        m, k = a.q_augs, a.target_augs
        obs = torch.as_tensor(batch["obs"], device=dev)
        next_obs = torch.as_tensor(batch["next_obs"], device=dev)
        action = torch.as_tensor(batch["action"], device=dev)
        reward = torch.as_tensor(batch["reward"], device=dev)
        discount = torch.as_tensor(batch["discount"], device=dev)
        n = obs.shape[0]
        if m > 1:  # DrQ's M: each transition m times, each copy shifted on its own
            obs, action = obs.repeat(m, 1, 1, 1), action.repeat(m, 1)
        if k > 1:  # DrQ's K
            next_obs = next_obs.repeat(k, 1, 1, 1)
        if a.augment:
            obs, next_obs = random_shift(obs, a.augment_pad), random_shift(next_obs, a.augment_pad)

        features = self._encode(obs)
        with torch.no_grad():
            next_features = self._encode(next_obs)
            next_action = self.actor_target(next_features)
            if a.target_smoothing:
                eps = (torch.randn_like(next_action) * smoothing_std).clamp(
                    -a.noise_clip, a.noise_clip
                )
                next_action = (next_action + eps).clamp(-1.0, 1.0)
            next_q = self.critic_target(next_features, next_action).min(dim=-1).values
            target = reward + discount * next_q.view(k, n).mean(dim=0)
        q = self.critic(features, action)
        # the mean over the batch and the m copies, summed over the Q heads
        critic_loss = (q.view(m, n, -1) - target[:, None]).pow(2).mean(dim=(0, 1)).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        clip_gradients(self.critic_opt.param_groups[0]["params"], a.max_grad_norm)
        self.critic_opt.step()

        detached = features.detach()
        self.critic.requires_grad_(False)  # the actor's loss needs no critic weight gradients
        pre = self.actor.head.pre_tanh(detached)
        actor_loss = -self.critic(detached, torch.tanh(pre)).min(dim=-1).values.mean()
        if a.pre_tanh_l2 > 0:
            actor_loss = actor_loss + a.pre_tanh_l2 * pre.pow(2).sum(dim=-1).mean()
        self.critic.requires_grad_(True)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        clip_gradients(self.actor.head.parameters(), a.max_grad_norm)
        self.actor_opt.step()

        soft_update(self.critic_target, self.critic, a.tau)
        soft_update(self.actor_target, self.actor.head, a.tau)
        return {
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "q": q.detach().mean(),
            "target_q": target.mean(),
            # share of the batch's action components in tanh's flat tails (|tanh| > 0.995)
            "saturated": (pre.detach().abs() > 3.0).float().mean(),
        }

    def _parts(self) -> tuple[dict, dict]:
        models = {
            "policy": self.actor,
            "critic": self.critic,
            "actor_target": self.actor_target,
            "critic_target": self.critic_target,
        }
        return models, {"actor": self.actor_opt, "critic": self.critic_opt}

    def state(self, **extra) -> dict:
        return learner_state(*self._parts(), **extra)

    def load(self, payload: dict) -> None:
        restore_learner(payload, *self._parts())


def train(run: Run) -> None:
    cfg, a, device = run.cfg, settings(run.cfg.algo), run.device
    envs = make_vector_env(cfg.env, a.num_envs, mode=TRAIN)
    obs_space, action_space = envs.single_observation_space, envs.single_action_space
    run.set_spaces(obs_space, action_space)
    agent = DDPG(cfg, obs_space, action_space, device)
    schedule = LinearLR(a, cfg.total_frames)
    action_dim = int(np.prod(action_space.shape))
    frame_bytes = a.buffer_size * int(np.prod(obs_space.shape)) // int(cfg.env.frame_stack)
    buffer = ReplayBuffer(
        a.buffer_size,
        obs_space.shape,
        int(cfg.env.frame_stack),
        action_dim,
        a.num_envs,
        cfg.seed,
        storage=choose_storage(a.replay_device, device, frame_bytes),
        checkpointed=bool(cfg.checkpoint.include_replay),
    )
    run.tracker.message(buffer.describe())
    ou = OUNoise((a.num_envs, action_dim), a.ou_theta, a.ou_sigma)
    frames, steps = run.start_frames, 0
    learn_from = a.warmup_frames
    if run.resume:
        agent.load(run.resume)
        steps = int(run.resume["extra"]["steps"])
        ou.state[:] = run.resume["extra"]["ou"].numpy()
        if "replay" in run.resume:  # popped: the run keeps run.resume, not its frames
            buffer.load_state_dict(run.resume.pop("replay"))
        else:  # refill before learning again, acting with the trained policy
            learn_from = frames + a.warmup_frames
            run.tracker.message(
                f"resume: the checkpoint has no replay buffer (checkpoint.include_replay=false); "
                f"collecting {a.warmup_frames:,} frames before updating again"
            )

    frames_per_step = envs.frames_per_step * a.num_envs
    low = action_space.low.reshape(-1).astype(np.float32)
    high = action_space.high.reshape(-1).astype(np.float32)
    act = act_fn(agent.actor, device)

    def state():
        s = agent.state(steps=steps, ou=torch.from_numpy(ou.state.copy()))
        if cfg.checkpoint.include_replay:
            s["replay"] = buffer.state_dict()
        return s

    def explore(obs: np.ndarray) -> tuple[np.ndarray, float]:
        std = linear_decay(a.noise_std_start, a.noise_std_end, frames, a.noise_decay_frames)
        if frames < a.warmup_frames:
            return np.random.uniform(-1.0, 1.0, (a.num_envs, action_dim)).astype(np.float32), std
        with torch.no_grad():
            mu = agent.actor(torch.as_tensor(obs, device=device)).cpu().numpy()
        noise = ou() if a.noise == "ou" else std * np.random.randn(*mu.shape)
        return np.clip(mu + noise, -1.0, 1.0).astype(np.float32), std

    obs, _ = envs.reset(seed=cfg.seed + frames)
    try:
        while not run.done(frames):
            action, std = explore(obs)
            env_action = to_action_space(action, low, high)  # action is already in [-1, 1]
            next_obs, reward, terminated, truncated, info = envs.step(
                env_action.reshape(-1, *action_space.shape)
            )
            final_obs = info.get("final_obs", next_obs)
            buffer.add(obs, action, reward, final_obs, terminated, truncated)
            ou.reset(terminated | truncated)
            obs = next_obs
            steps += 1
            frames += frames_per_step
            run.tracker.episodes_from_info(frames, info)
            metrics = None
            ready = frames >= learn_from and len(buffer) >= a.n_step * a.num_envs
            if ready and steps % a.update_every == 0:
                smoothing = std if a.noise == "gaussian" else a.ou_sigma
                lr = schedule.apply(agent.critic_opt, frames)
                schedule.apply(agent.actor_opt, frames)
                for _ in range(a.updates_per_step):
                    batch = buffer.sample(a.batch_size, a.n_step, a.gamma)
                    metrics = agent.update(batch, smoothing)
                if a.noise == "gaussian":
                    metrics["noise_std"] = std
                if a.lr_decay != "none":
                    metrics["lr"] = lr
            run.step_done(frames, metrics, act, state)
        run.finish(frames, act, state)
    finally:
        envs.close()
