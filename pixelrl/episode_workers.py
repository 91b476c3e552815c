"""Episode workers: REINFORCE's episodes played where the env is (pg-pong's fast path).

One of REINFORCE's two episode sources, with the interface `pixelrl.episodes` describes. The
batched source (episodes.BatchedEpisodes) steps envs in worker processes and runs the policy
in the learner: every block of env steps costs a message, a wake-up and a small forward pass in
the learner, which on 2 cores takes about as much CPU as the env itself. A policy with one hidden
layer (pg-pong's 6400 -> 200 ReLU -> P(UP)) is cheaper than a message, so here every worker
process plays whole episodes with a numpy copy of it and differentiates them itself:

- the learner publishes the weights in shared memory and hands out the batch's `batch_episodes`
  episodes as tasks; the weights only change between batches, so every episode of a batch is
  played by one policy, as in pg-pong;
- a worker plays an episode (the first layer reads only the nonzero pixels of pg-pong's mostly
  empty difference frames), then computes the episode's Psi (reward-to-go, reset on reward,
  standardized per episode, ...) and its gradient, and adds it to the shared gradient buffer,
  pg-pong's grad_buffer;
- the learner waits for the batch, hands the summed gradient to its optimizer (the same
  RMSProp step as the batched path) and publishes the new weights.

With one worker per episode of a batch (10 processes on 2 cores) the OS shares the cores among
the episodes still running, so no core waits until only the batch's longest episode is left.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import queue as queue_lib

import numpy as np
import scipy.sparse
import torch

from pixelrl.envs import frames_per_step, single_env_fn
from pixelrl.models import obs_scale
from pixelrl.returns import episode_returns, normalize_returns
from pixelrl.shm import SharedArray
from pixelrl.workers import (
    WorkerGroup,
    parent_alive,
    report_errors,
    start_method,
    worker_setup,
)

STOP_CHECK_STEPS = 256  # env steps between looks at the stop flag inside an episode
WORKER_BYTES = 150 << 20  # a forked worker: its env, numpy buffers, pages it stops sharing


def unsupported_reason(cfg) -> str | None:
    """Why episode workers cannot run this config; None when they can."""
    a, m = cfg.algo, cfg.model
    if m.trunk != "mlp" or m.mlp_layers != 1:
        return "they play a one-hidden-layer MLP (model.trunk=mlp model.mlp_layers=1)"
    if a.psi == "baseline" and a.baseline == "value":
        return "a learned value baseline needs the batched learner (algo.baseline=running_mean)"
    if a.normalize_returns == "batch":
        return (
            "returns standardized over the whole batch are known only when it ends "
            "(algo.normalize_returns=episode or none)"
        )
    if not a.wait_for_batch:
        return "they always play whole batches with one policy (algo.wait_for_batch=true)"
    return None


def wanted(cfg) -> bool:
    """algo.collector=workers, or auto where the workers can run the config (REINFORCE's config
    check has already refused algo.collector=workers where they cannot)."""
    return cfg.algo.collector != "batched" and unsupported_reason(cfg) is None


# ------------------------------------------------------------------------------------------
# The policy and its gradient in numpy (what runs inside a worker)
# ------------------------------------------------------------------------------------------


class NumpyPolicy:
    """h = relu(W1 x + b1), logits = W2 h + b2; one output z with sigmoid (logits [z, 0])."""

    def __init__(
        self, params: dict[str, np.ndarray], sigmoid: bool, scale: float, bias: bool = True
    ):
        self.w1t, self.b1 = params["w1t"], params["b1"]  # (D, H): rows are gathered per input
        self.w2, self.b2 = params["w2"], params["b2"]  # (K, H), K = 1 with sigmoid
        self.w2_row = self.w2[0]  # views of the shared weights: they follow every update
        self.sigmoid, self.scale, self.bias = sigmoid, scale, bias
        self.dim = self.w1t.shape[0]

    def features(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(nonzero input indices, their values, hidden activations)."""
        x = obs.reshape(-1)
        if self.scale != 1.0:
            x = x.astype(np.float32) * np.float32(self.scale)
        idx = (x != 0).nonzero()[0]  # 7x faster than np.flatnonzero on floats
        vals = x[idx]
        if vals.dtype != np.float32:
            vals = vals.astype(np.float32)
        if len(idx) * 8 < self.dim:  # pg-pong's difference frames: ~99% zeros
            pre = vals @ self.w1t[idx]
        else:
            pre = x.astype(np.float32, copy=False) @ self.w1t
        if self.bias:
            pre += self.b1
        return idx, vals, np.maximum(pre, 0.0, out=pre)

    def sample(self, h: np.ndarray, rng: np.random.Generator) -> tuple[int, float | np.ndarray]:
        """(action, the head's output: z with sigmoid, else the logits)."""
        if self.sigmoid:  # P(action 0) = sigmoid(z), tanh form: no overflow
            z = float(self.w2_row @ h) + (float(self.b2[0]) if self.bias else 0.0)
            return (0 if rng.random() < 0.5 * (1.0 + math.tanh(0.5 * z)) else 1), z
        out = self.w2 @ h + self.b2
        e = np.exp(out - out.max())
        cdf = np.cumsum(e)
        return min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(e) - 1), out


def episode_gradient(
    policy: NumpyPolicy,
    steps: dict,
    psi: np.ndarray,
    entropy_coef: float,
    out: dict[str, np.ndarray],
) -> tuple[dict[str, float], np.ndarray]:
    """Add d(loss)/d(params) of one episode to `out`, loss = sum_t -Psi_t log pi(a_t|s_t) -
    entropy_coef H(pi(.|s_t)): the batched learner's loss, differentiated by hand.
    Returns (loss statistics, the first layer's rows this episode touched)."""
    actions = np.asarray(steps["actions"])
    t_len = len(actions)
    logits = np.asarray(steps["logits"], np.float64).reshape(t_len, -1)  # (T, K)
    full = np.concatenate([logits, np.zeros((t_len, 1))], 1) if policy.sigmoid else logits
    top = full.max(1, keepdims=True)
    logp = full - top - np.log(np.exp(full - top).sum(1, keepdims=True))
    probs = np.exp(logp)
    entropy = -(probs * logp).sum(1)
    onehot = np.zeros_like(probs)
    onehot[np.arange(t_len), actions] = 1.0
    dlogits = -psi[:, None] * (onehot - probs)
    if entropy_coef:
        dlogits += entropy_coef * probs * (logp + entropy[:, None])
    d_out = (dlogits[:, :1] if policy.sigmoid else dlogits).astype(np.float32)  # (T, K)
    hidden = np.stack(steps["hidden"])  # (T, H)
    out["w2"] += d_out.T @ hidden
    out["b2"] += d_out.sum(0)
    d_hidden = d_out @ policy.w2
    d_hidden *= hidden > 0
    out["b1"] += d_hidden.sum(0)
    rows, block = first_layer_gradient(steps["idx"], steps["vals"], d_hidden, out["w1t"].shape[0])
    out["w1t"][rows] += block
    stats = {
        "policy_loss": float(-(psi * logp[np.arange(t_len), actions]).sum()),
        "entropy": float(entropy.sum()),
    }
    return stats, rows


def first_layer_gradient(idx_list, vals_list, d_hidden, dim) -> tuple[np.ndarray, np.ndarray]:
    """(rows, block): the gradient of W1^T is `block` on `rows` and zero elsewhere, where
    block[r] = sum over steps t with input rows[r] nonzero of x_t[rows[r]] * d_hidden[t]."""
    counts = np.fromiter((len(i) for i in idx_list), np.int64, len(idx_list))
    idx, vals = np.concatenate(idx_list), np.concatenate(vals_list)
    if counts.mean() * 8 >= dim:  # dense inputs: one matrix product
        x = np.zeros((len(idx_list), dim), np.float32)
        x[np.repeat(np.arange(len(idx_list)), counts), idx] = vals
        return np.arange(dim), x.T @ d_hidden
    # Sparse inputs (~20 of 6,400 pixels differ per pg-pong frame): X^T as a sparse matrix (pixels
    # x steps, CSR) times d_hidden, on the touched pixels only; 5x faster than a row update per step.
    indptr = np.zeros(len(idx_list) + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    xt = scipy.sparse.csr_matrix((vals, idx, indptr), shape=(len(idx_list), dim)).T.tocsr()
    rows = np.flatnonzero(np.diff(xt.indptr))
    return rows, xt[rows] @ d_hidden


def play_episode(env, obs, policy: NumpyPolicy, rng, stop, clip: bool) -> dict | None:
    """One whole episode; None if asked to stop meanwhile."""
    idx_list, vals_list, hidden, outputs, actions, rewards = [], [], [], [], [], []
    features, sample, step = policy.features, policy.sample, env.step
    n = 0
    while True:
        idx, vals, h = features(obs)
        action, out = sample(h, rng)
        obs, reward, terminated, truncated, _ = step(action)
        idx_list.append(idx)
        vals_list.append(vals)
        hidden.append(h)
        outputs.append(out)
        actions.append(action)
        rewards.append(reward)
        if terminated or truncated:
            break
        n += 1
        if n % STOP_CHECK_STEPS == 0 and stop.is_set():
            return None
    raw = np.asarray(rewards, np.float64)
    return {
        "idx": idx_list,
        "vals": vals_list,
        "hidden": hidden,
        "logits": outputs,
        "actions": actions,
        "rewards": np.sign(raw) if clip else raw,
        "raw": float(raw.sum()),
    }


def _worker_main(rank, env_fn, specs, settings, seed, tasks, results, lock, stop, parent_pid):
    """Entry point of a worker process: play the tasks' episodes, add their gradients."""
    worker_setup(parent_pid)
    env = None
    with report_errors(rank, results):
        try:
            env = env_fn()
            _play_tasks(rank, env, specs, settings, seed, tasks, results, lock, stop, parent_pid)
        finally:
            if env is not None:
                env.close()


def _play_tasks(rank, env, specs, settings, seed, tasks, results, lock, stop, parent_pid):
    buf = {k: SharedArray.attach(s) for k, s in specs.items()}
    params = {k: buf[k].array for k in ("w1t", "b1", "w2", "b2")}
    shared_grads = {k: buf["g_" + k].array for k in params}
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    policy = NumpyPolicy(params, settings["sigmoid"], settings["scale"], settings["bias"])
    a = settings["algo"]
    rng = np.random.default_rng(seed)
    reset_seed = seed
    while not stop.is_set():
        try:
            task = tasks.get(timeout=0.5)
        except queue_lib.Empty:
            if not parent_alive(parent_pid):  # the learner is gone: don't linger
                return
            continue
        if task is None:
            return
        obs, _ = env.reset(seed=reset_seed)
        reset_seed = None
        steps = play_episode(env, obs, policy, rng, stop, settings["clip"])
        if steps is None:
            return
        rewards = steps["rewards"]
        returns = episode_returns(rewards, a.psi, a.gamma, a.reset_on_reward)
        psi = returns - task["running_mean"] if task["running_mean"] is not None else returns
        psi = normalize_returns([psi], a.normalize_returns)[0]
        stats, rows = episode_gradient(policy, steps, psi, a.entropy_coef, grads)
        # a worker killed inside the lock never releases it: wait in slices, so that the
        # others still see the stop the learner then sends
        while not lock.acquire(timeout=0.25):
            if stop.is_set():
                return
        try:
            shared_grads["w1t"][rows] += grads["w1t"][rows]
            for k in ("b1", "w2", "b2"):
                shared_grads[k] += grads[k]
        finally:
            lock.release()
        grads["w1t"][rows] = 0.0
        for k in ("b1", "w2", "b2"):
            grads[k].fill(0.0)
        results.put(
            {
                "type": "episode",
                "rank": rank,
                "length": len(rewards),
                "raw_return": steps["raw"],
                "reward_sum": float(rewards.sum()),
                "returns_sum": float(returns.sum()),
                **stats,
            }
        )


# ------------------------------------------------------------------------------------------
# The learner's side
# ------------------------------------------------------------------------------------------


def _torch_params(net) -> dict[str, torch.nn.Parameter | None]:
    first, head = net.trunk.net[1], net.policy.linear
    return {"w1": first.weight, "b1": first.bias, "w2": head.weight, "b2": head.bias}


class EpisodeWorkers:
    """`num_envs` worker processes playing and differentiating whole episodes."""

    def __init__(self, cfg, seed: int):
        self.cfg, self.a = cfg, cfg.algo
        probe = single_env_fn(cfg.env)()
        self.observation_space, self.action_space = probe.observation_space, probe.action_space
        probe.close()
        self.frames_per_step = frames_per_step(cfg.env)
        self.seed = seed
        self.group: WorkerGroup | None = None
        self.buf: dict[str, SharedArray] = {}

    def start(self, net) -> None:
        params = _torch_params(net)
        w1, w2 = params["w1"], params["w2"]
        hidden, dim, k = w1.shape[0], w1.shape[1], w2.shape[0]
        shapes = {"w1t": (dim, hidden), "b1": (hidden,), "w2": (k, hidden), "b2": (k,)}
        for name, shape in shapes.items():
            for key in (name, "g_" + name):
                self.buf[key] = SharedArray(shape, np.float32)
                self.buf[key].array[:] = 0.0
        ctx = mp.get_context(start_method(self.cfg.env.kind))
        self.group = WorkerGroup(ctx, "reinforce episode worker")
        self.tasks, self.lock = ctx.Queue(), ctx.Lock()
        specs = {name: b.spec for name, b in self.buf.items()}
        settings = {
            "algo": self.a,
            "sigmoid": self.cfg.model.policy_head == "sigmoid",
            "bias": bool(self.cfg.model.bias),
            "scale": obs_scale(self.observation_space),
            "clip": bool(self.cfg.env.get("clip_rewards", False)),
        }
        env_fn, group = single_env_fn(self.cfg.env), self.group
        shared = (self.tasks, group.results, self.lock, group.stop_event, os.getpid())
        args = [
            (rank, env_fn, specs, settings, self.seed + rank, *shared)
            for rank in range(self.a.num_envs)
        ]
        group.start(_worker_main, args, "pixelrl-episodes")

    def _publish(self, net) -> None:
        for name, p in _torch_params(net).items():
            key = "w1t" if name == "w1" else name
            dst = self.buf[key].array
            if p is None:
                dst[:] = 0.0
            elif name == "w1":
                dst[:] = p.detach().cpu().numpy().T
            else:
                dst[:] = p.detach().cpu().numpy()
            self.buf["g_" + key].array[:] = 0.0

    def play(self, net, running_mean, on_episode, stop=lambda: False) -> dict[str, float] | None:
        """Play one batch with `net`'s weights; its gradient ends up in the parameters' .grad.
        None when `stop()` turns true first (a stop signal does not wait for the batch)."""
        # A worker that died between batches holds no task: look before handing out new ones.
        self.group.check()
        self._publish(net)
        n = self.a.batch_episodes
        for _ in range(n):
            self.tasks.put({"running_mean": running_mean})
        totals = {"policy_loss": 0.0, "entropy": 0.0, "batch_steps": 0.0}
        received = 0
        while received < n:
            if stop():
                self.group.stop_event.set()  # the workers drop their episodes too
                return None
            msg = self.group.get()
            if msg is None:
                continue
            received += 1
            totals["policy_loss"] += msg["policy_loss"]
            totals["entropy"] += msg["entropy"]
            totals["batch_steps"] += msg["length"]
            on_episode(msg["length"], msg["raw_return"], msg["reward_sum"], msg["returns_sum"])
        for name, p in _torch_params(net).items():
            if p is None:
                continue
            g = torch.from_numpy(self.buf["g_" + ("w1t" if name == "w1" else name)].array)
            p.grad = (g.t() if name == "w1" else g).to(p.device, copy=True).contiguous()
        return totals

    def close(self) -> None:
        if self.group is not None:
            self.group.stop()
            self.group = None
        for shared in self.buf.values():
            shared.release()
        self.buf = {}
