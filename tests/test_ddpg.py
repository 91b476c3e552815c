"""DDPG: augmentation, action bounds, schedules and updates by hand; tiny CLI runs on the pixel
control envs (metrics, checkpoint, video, eval/watch, resume with the replay buffer); bad input;
learning Reach."""

import importlib.util
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import pixelrl
from pixelrl import checkpoint
from pixelrl.algos.ddpg import (
    DDPG,
    OUNoise,
    linear_decay,
    make_policy,
    random_shift,
    soft_update,
)
from pixelrl.config import ConfigError, DDPGConfig
from pixelrl.device import cpu_multiplies_bf16, use_bf16
from pixelrl.video import read_video

from .conftest import FAST, last_json_line, metrics

HAS_DMC = importlib.util.find_spec("dm_control") is not None
OBS = gym.spaces.Box(0, 255, (9, 32, 32), np.uint8)
ACT = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))


def cfg(**kw):
    algo = OmegaConf.structured(DDPGConfig(feature_dim=8, hidden_dim=32, **kw))
    return OmegaConf.create({"algo": algo})


# ---------------------------------------------------------------- pieces by hand


def test_random_shift_moves_each_image_by_at_most_pad():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (32, 6, 12, 12), dtype=torch.uint8)
    y = random_shift(x, 2)
    assert y.shape == x.shape and y.dtype == torch.uint8
    padded = torch.nn.functional.pad(x.float(), (2, 2, 2, 2), mode="replicate")
    shifts = []
    for i in range(len(x)):
        found = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(padded[i, :, dy : dy + 12, dx : dx + 12], y[i].float())
        ]
        assert found, f"image {i} is not a shift of its original"
        shifts.append(found[0])
    assert len(set(shifts)) > 5  # drawn per image
    assert torch.equal(random_shift(x, 0), x)


def test_actor_actions_stay_in_the_action_space():
    actor = make_policy(cfg(), OBS, ACT)
    with torch.no_grad():
        actor.head.mu[-1].weight.mul_(1000.0)  # saturate the tanh
    obs = torch.randint(0, 256, (64, *OBS.shape), dtype=torch.uint8)
    a = actor.act(obs)
    assert a.shape == (64, 2)
    assert (a >= torch.tensor([-2.0, 0.0])).all() and (a <= torch.tensor([2.0, 1.0])).all()
    assert (a[:, 0].abs() > 1.9).any()  # saturated outputs reach the bounds
    unit = torch.tensor([[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0], [5.0, -5.0]])
    np.testing.assert_allclose(
        actor.to_env(unit).numpy(), [[-2, 0], [0, 0.5], [2, 1], [2, 0]], atol=1e-6
    )


def test_schedules_and_soft_update_by_hand():
    assert linear_decay(1.0, 0.1, 0, 100) == 1.0
    assert linear_decay(1.0, 0.1, 50, 100) == pytest.approx(0.55)
    assert linear_decay(1.0, 0.1, 500, 100) == pytest.approx(0.1)
    target, online = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    for p, v in ((target, 0.0), (online, 4.0)):
        torch.nn.init.constant_(p.weight, v)
        torch.nn.init.constant_(p.bias, v)
    soft_update(target, online, 0.25)
    assert target.weight.item() == 1.0 and target.bias.item() == 1.0
    ou = OUNoise((1, 2), theta=0.5, sigma=0.0)
    ou.state[:] = 8.0
    assert ou().tolist() == [[4.0, 4.0]] and ou().tolist() == [[2.0, 2.0]]
    ou.reset(np.array([True]))
    assert ou.state.tolist() == [[0.0, 0.0]]


def batch(n=16, action_dim=2):
    g = np.random.default_rng(0)
    return {
        "obs": g.integers(0, 256, (n, *OBS.shape), dtype=np.uint8),
        "next_obs": g.integers(0, 256, (n, *OBS.shape), dtype=np.uint8),
        "action": g.uniform(-1, 1, (n, action_dim)).astype(np.float32),
        "reward": g.normal(size=n).astype(np.float32),
        "discount": np.full(n, 0.9, np.float32),
    }


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def changed(before, module):
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters()))


@pytest.mark.parametrize("which", ["critic", "actor"])
def test_critic_trains_the_encoder_and_the_actor_reads_detached_features(which):
    agent = DDPG(cfg(), OBS, ACT, torch.device("cpu"))
    opt = agent.critic_opt if which == "actor" else agent.actor_opt
    for group in opt.param_groups:
        group["lr"] = 0.0  # only `which` learns
    enc, head, critic = params(agent.encoder), params(agent.actor.head), params(agent.critic)
    target = params(agent.critic_target)
    metrics = agent.update(batch(), smoothing_std=0.2)
    assert set(metrics) == {"critic_loss", "actor_loss", "q", "target_q", "saturated"}
    assert changed(enc, agent.encoder) == (which == "critic")
    assert changed(critic, agent.critic) == (which == "critic")
    assert changed(head, agent.actor.head) == (which == "actor")
    assert changed(target, agent.critic_target) == (which == "critic")  # soft update follows


def test_double_q_has_two_heads_and_uses_the_smaller_target():
    agent = DDPG(cfg(double_q=True), OBS, ACT, torch.device("cpu"))
    f = torch.zeros(3, agent.encoder.out_dim)
    assert agent.critic(f, torch.zeros(3, 2)).shape == (3, 2)
    with torch.no_grad():
        agent.critic_target.qs[0][-1].bias.fill_(100.0)  # Q1' far above Q2'
    b = batch()
    b["discount"][:] = 1.0
    b["reward"][:] = 0.0
    m = agent.update(b, smoothing_std=0.0)
    assert m["target_q"] < 50.0


def test_drq_averages_the_target_over_k_shifts_and_the_loss_over_m(monkeypatch):
    """algo.target_augs=2, algo.q_augs=2 (DrQ's K and M): each row's target is the mean of the
    target Q over its 2 shifted copies of s', and the loss the mean over 2 shifted copies of s. A
    stand-in shift (copy j of the batch: the images rolled by 5j pixels) makes it checkable."""
    import pixelrl.algos.ddpg as ddpg

    def shift(x, pad):
        copies = x.shape[0] // 16
        return torch.cat([x[j * 16 : (j + 1) * 16].roll(5 * j, dims=-1) for j in range(copies)])

    monkeypatch.setattr(ddpg, "random_shift", shift)
    torch.manual_seed(0)
    agent = DDPG(cfg(target_augs=2, q_augs=2, precision="fp32"), OBS, ACT, torch.device("cpu"))
    b = batch()
    obs, next_obs = torch.as_tensor(b["obs"]), torch.as_tensor(b["next_obs"])
    action = torch.as_tensor(b["action"])
    with torch.no_grad():  # Q values that differ clearly from image to image
        agent.critic.qs[0][-1].weight.mul_(100.0)
        agent.critic_target.qs[0][-1].weight.mul_(100.0)

        def target_q(x):
            f = agent.encoder(x)
            return agent.critic_target(f, agent.actor_target(f))[:, 0]

        def q(x):
            return agent.critic(agent.encoder(x), action)[:, 0]

        target = (
            torch.as_tensor(b["reward"])
            + 0.9 * (target_q(next_obs) + target_q(next_obs.roll(5, dims=-1))) / 2
        )
        loss = (q(obs) - target).pow(2).mean() + (q(obs.roll(5, dims=-1)) - target).pow(2).mean()
    m = agent.update(b, smoothing_std=0.0)
    assert float(m["target_q"]) == pytest.approx(float(target.mean()), rel=1e-5)
    assert float(m["critic_loss"]) == pytest.approx(float(loss) / 2, rel=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_pre_tanh_penalty_pulls_a_saturated_actor_back(precision):
    """A saturated actor (tanh input ~ 20) gets no gradient from Q through tanh, and Adam keeps
    it there; algo.pre_tanh_l2 pulls it back towards tanh's working range. Both precision paths
    (bf16 is emulated where the CPU lacks it); the margins are far above rounding (offline, seeds
    0-3, 40 updates: the unpenalized actor stayed >= 19.6, the penalized one ended 0.6-1.7 lower)."""
    pre = {}
    for weight in (0.0, 1e-2):
        torch.manual_seed(0)
        a = cfg(lr=1e-3, augment=False, pre_tanh_l2=weight, precision=precision)
        agent = DDPG(a, OBS, ACT, torch.device("cpu"))
        with torch.no_grad():
            agent.actor.head.mu[-1].bias.fill_(20.0)
        b = batch()
        assert agent.update(b, 0.2)["saturated"] == 1.0
        for _ in range(60):
            last = agent.update(b, 0.2)
        f = agent._encode(torch.as_tensor(b["obs"]))
        pre[weight] = agent.actor.head.pre_tanh(f).detach()
        if not weight:
            assert last["saturated"] == 1.0  # no way back without the penalty
    assert pre[0.0].min() > 19.0  # stays out in the flat tail
    assert pre[1e-2].max() < pre[0.0].min() - 0.5  # the penalty brings it back


def test_critic_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    agent = DDPG(cfg(lr=1e-3, augment=False), OBS, ACT, torch.device("cpu"))
    b = batch()
    b["discount"][:] = 0.0  # plain regression onto the rewards
    losses = [agent.update(b, 0.2)["critic_loss"] for _ in range(30)]
    assert losses[-1] < 0.2 * losses[0]


def test_precision_is_bf16_only_where_asked_or_native():
    cpu = torch.device("cpu")
    assert not use_bf16("fp32", cpu) and use_bf16("bf16", cpu)
    native = any(
        bool(getattr(torch.cpu, probe, lambda: False)())
        for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    )
    assert use_bf16("auto", cpu) == native
    assert not use_bf16("auto", torch.device("mps"))


def test_bf16_update_runs_the_encoder_in_bf16_and_keeps_fp32_weights_and_losses():
    b = batch()
    out = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        agent = DDPG(cfg(augment=False, precision=precision), OBS, ACT, torch.device("cpu"))
        dtypes = []
        conv = agent.encoder.convs[0]
        hook = conv.register_forward_hook(lambda m, i, o, d=dtypes: d.append(o.dtype))
        out[precision] = agent.update(b, smoothing_std=0.0)
        hook.remove()
        expected = torch.bfloat16 if precision == "bf16" else torch.float32
        assert dtypes == [expected, expected]  # the observations and the next observations
        assert all(p.dtype == torch.float32 for p in agent.encoder.parameters())
    # 0-d tensors left on the device (read when the losses are logged, not after every update)
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in out["fp32"].values())
    for k in ("critic_loss", "q", "target_q"):
        assert float(out["bf16"][k]) == pytest.approx(float(out["fp32"][k]), rel=0.05, abs=1e-3)


# ---------------------------------------------------------------- the CLI, end to end

TINY = [
    "algo=ddpg",
    "algo.batch_size=8",
    "algo.hidden_dim=32",
    "algo.feature_dim=16",
    "algo.buffer_size=2000",
    "algo.update_every=4",
    "torch_threads=1",
    "eval.episodes=1",
    "eval.num_envs=1",
    "eval.final=false",
    "logger.wandb.mode=disabled",
    "logger.progress=false",
    "logger.fps_every_s=0",
    "video.max_steps=6",
]


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory):
    from .conftest import run_cli

    root = tmp_path_factory.mktemp("pendulum")
    run_cli(
        *TINY,
        "env=Pendulum",
        "env.resolution=64",
        "total_frames=240",
        "algo.warmup_frames=100",
        "eval.every_frames=200",
        "checkpoint.include_replay=true",
        "hydra.run.dir=run",
        cwd=root,
        check=True,
    )
    return root, root / "run"


def test_pendulum_run_writes_metrics_checkpoint_and_video(pendulum_run):
    _, run_dir = pendulum_run
    rows = metrics(run_dir)
    episodes = [r for r in rows if "train/episode_return" in r]
    assert episodes and all(r["train/episode_length"] == 100 for r in episodes)
    assert all(-1700 < r["train/episode_return"] <= 0 for r in episodes)
    assert any("losses/critic_loss" in r and "losses/actor_loss" in r for r in rows)
    assert any("eval/return_mean" in r for r in rows)
    payload = checkpoint.load(run_dir)
    assert payload["frames"] >= 240 and payload["config"]["algo"]["name"] == "ddpg"
    assert set(payload["models"]) == {"policy", "critic", "actor_target", "critic_target"}
    assert set(payload["optimizers"]) == {"actor", "critic"}
    assert len(payload["replay"]["streams"][0]["frames"]) == 120 + 2  # + the episodes' ends
    video = read_video(next((run_dir / "videos").glob("*.mp4")))
    assert video.shape[0] == 7 and video.shape[-1] == 3


def test_pendulum_eval_watch_and_load_agent(pendulum_run, cli):
    _, run_dir = pendulum_run
    proc = cli("mode=eval", f"load={run_dir}", "eval.episodes=1", *FAST, "hydra.run.dir=ev")
    assert proc.returncode == 0, proc.stderr
    result = last_json_line(proc.stdout)
    assert result["episodes"] == 1 and -1700 < result["return_mean"] <= 0
    # env.* keys apply on top of the checkpoint's config: a 40-frame episode (20 agent steps)
    watch = ["mode=watch", f"load={run_dir}", "eval.episodes=1", "env.max_episode_frames=40"]
    proc = cli(*watch, *FAST[:2], "hydra.run.dir=w")
    assert proc.returncode == 0, proc.stderr
    assert "XDG_RUNTIME_DIR" not in proc.stderr and "ALSA" not in proc.stderr  # headless pygame
    paths = [line for line in proc.stdout.splitlines() if line.endswith(".mp4")]
    assert len(paths) == 1 and len(read_video(paths[0])) == 20  # reset + 19 steps, then the end
    agent = pixelrl.load_agent(run_dir)
    obs = np.random.default_rng(0).integers(0, 256, (3, 9, 64, 64), dtype=np.uint8)
    actions = agent.act(obs)
    assert actions.shape == (3, 1) and (np.abs(actions) <= 2.0).all()


def test_pendulum_resume_restores_the_replay_buffer(pendulum_run, cli):
    _, run_dir = pendulum_run
    before = checkpoint.load(run_dir)
    proc = cli(
        f"resume={run_dir}",
        "total_frames=320",
        "checkpoint.include_replay=true",  # run-level settings come from the command line
        "eval.final=false",
        "torch_threads=1",
        *FAST,
        check=True,
    )
    out = proc.stdout + proc.stderr
    assert "resuming at 240" in out and "no replay buffer" not in out
    after = checkpoint.load(run_dir)
    assert after["frames"] >= 320 and after["updates"] > before["updates"]
    frames = after["replay"]["streams"][0]["frames"]
    assert len(frames) == 120 + 2 + 40 + 1  # continued, a new episode after the restart
    assert torch.equal(frames[:122], before["replay"]["streams"][0]["frames"])


@pytest.mark.parametrize(
    "env",
    [
        "CarRacing",
        pytest.param("dmc", marks=pytest.mark.skipif(not HAS_DMC, reason="needs the dmc extra")),
    ],
)
def test_tiny_run_on(env, cli, tmp_path):
    extra = ["env.task=cartpole_swingup", "env.action_repeat=8"] if env == "dmc" else []
    cli(
        *TINY,
        f"env={env}",
        *extra,
        "env.resolution=64",
        "total_frames=320",
        "algo.warmup_frames=160",
        "eval.every_frames=320",
        "env.max_episode_frames=160",
        "hydra.run.dir=run",
        check=True,
    )
    rows = metrics(tmp_path / "run")
    assert any("train/episode_return" in r for r in rows)
    assert any("losses/critic_loss" in r for r in rows)
    assert any("eval/return_mean" in r for r in rows)
    assert checkpoint.load(tmp_path / "run")["frames"] >= 320
    frames = read_video(next((tmp_path / "run" / "videos").glob("*.mp4")))
    assert len(frames) == 7 and frames.shape[-1] == 3


def test_cartpole_100k_preset():
    """experiment=ddpg_cartpole_100k is the PlaNet-100k protocol with the settings BENCHMARKS.md
    measured; keys named on the command line still win."""
    cfg = pixelrl.compose_config(["experiment=ddpg_cartpole_100k"])
    assert (cfg.algo.name, cfg.env.name, cfg.env.task) == ("ddpg", "dmc", "cartpole_swingup")
    assert (cfg.env.action_repeat, cfg.total_frames, cfg.eval.every_frames) == (8, 100_000, 10_000)
    assert (cfg.algo.lr, cfg.algo.noise_decay_frames, cfg.algo.pre_tanh_l2) == (5e-4, 50_000, 1e-3)
    assert (cfg.env.resolution, cfg.algo.update_every) == (64, 1)
    cfg = pixelrl.compose_config(["experiment=ddpg_cartpole_100k", "algo.lr=1e-4", "seed=2"])
    assert cfg.algo.lr == 1e-4 and cfg.seed == 2 and cfg.env.action_repeat == 8


# ---------------------------------------------------------------- bad input

BAD_CONFIG = [  # caught by validate() before anything runs
    (
        ["algo=ddpg", "env=Pong"],
        "algo=ddpg needs continuous actions but env=Pong is discrete; "
        "use one of the continuous envs: CarRacing, dmc, Pendulum, Reach",
    ),
    (
        ["algo=actor_critic", "env=Pendulum"],
        "algo=actor_critic needs discrete actions but env=Pendulum is continuous; use algo=ddpg",
    ),
    (
        ["algo=ddpg", "env=Reach", "algo.noise=pink"],
        "algo.noise='pink' is not allowed; choose one of: gaussian, ou",
    ),
    (["algo=ddpg", "env=Reach", "algo.tau=0"], "algo.tau=0.0 is out of range; it must be > 0"),
    (
        ["algo=ddpg", "env=Reach", "algo.augment=false", "algo.q_augs=2"],
        "algo.q_augs=2 averages over random shifts, but algo.augment=false",
    ),
    (["algo=ddpg", "env=Reach", "algo.target_augs=0"], "algo.target_augs=0 is out of range"),
    (
        ["algo=ddpg", "env=Reach", "algo.precision=fp16"],
        "algo.precision='fp16' is not allowed; choose one of: auto, fp32, bf16",
    ),
]


@pytest.mark.parametrize("args,expected", BAD_CONFIG, ids=[" ".join(a) for a, _ in BAD_CONFIG])
def test_bad_ddpg_config_is_refused(args, expected):
    with pytest.raises(ConfigError) as e:
        pixelrl.compose_config(args)
    assert expected in str(e.value) and "\n" not in str(e.value)


BAD_RUN = [  # found when the run starts: env and buffer checks, as one line from the CLI
    (
        ["algo=ddpg", "env=Reach", "algo.buffer_size=100000000000"],
        "algo.buffer_size=100000000000 needs",
    ),
]
if HAS_DMC:
    BAD_RUN += [
        (
            ["algo=ddpg", "env=dmc", "env.task=walker_fly"],
            "env.task='walker_fly' is not a dm_control task; choose one of: acrobot_swingup,",
        ),
        (["algo=ddpg", "env=dmc"], "env.task is required for env=dmc"),
    ]


@pytest.mark.parametrize("args,expected", BAD_RUN, ids=[" ".join(a) for a, _ in BAD_RUN])
def test_bad_ddpg_run_is_one_clear_line(main, args, expected):
    code, _, err = main(*args, *FAST)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pixelrl: error: "), err
    assert expected in lines[0]


def test_dmc_without_the_extra_is_one_clear_line(cli, tmp_path):
    stub = tmp_path / "stub" / "dm_control"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError(\"No module named 'dm_control'\")\n")
    path = os.pathsep.join([str(stub.parent), os.environ.get("PYTHONPATH", "")])
    proc = cli("algo=ddpg", "env=dmc", "env.task=cartpole_swingup", *FAST, env={"PYTHONPATH": path})
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "pixelrl: error: env=dmc needs the dm_control extra: pip install 'pixelrl[dmc]'"
    )


# ---------------------------------------------------------------- learning

RANDOM_REACH = -23.8  # uniformly random actions: mean of 300 episodes (an oracle gets about +46)


# Checked offline (2026-12-01, AMD EPYC 2-core, no AMX, avx512_bf16), `algo=ddpg env=Reach seed=S
# algo.precision=P`, seeds 1-10: fp32 from -11.1 to +6.7 (mean 0.3), bf16 from -10.6 to +10.0
# (seeds 1-10); a saturated actor without algo.pre_tanh_l2 scored -34.8 (seed 6), random -23.8.
# On one thread, as the test runs (2026-12-06, Xeon without AMX or avx512_bf16, so bf16 emulated;
# an A3C run beside it), seeds 1-10: fp32 from -11.3 to +8.1 (mean 1.6), bf16 from -11.6 to
# +4.1 (mean -4.0).
REACH_LEARNED = RANDOM_REACH + 5.0


@pytest.mark.slow
@pytest.mark.parametrize("precision,seed", [("fp32", 1), ("bf16", 2)])
def test_ddpg_learns_reach(cli, tmp_path, precision, seed):
    """On both precision paths wherever it runs (bf16 is emulated where the CPU lacks it), on one
    thread: the Reach toy's updates are too small to share out (one thread took 30 s, two 59 s
    with an A3C run beside them), and emulated bf16 on two threads spins when other jobs share the
    cores (129 s of CPU for 500 updates, 9 s on one thread; past the CLI's 600-s timeout in the
    suite)."""
    proc = cli(
        "algo=ddpg",
        "env=Reach",
        f"seed={seed}",
        f"algo.precision={precision}",
        "torch_threads=1",
        "eval.every_frames=0",
        *FAST,
        "hydra.run.dir=run",
        check=True,
    )
    evals = [r["eval/return_mean"] for r in metrics(tmp_path / "run") if "eval/return_mean" in r]
    assert len(evals) == 1 and evals[0] > REACH_LEARNED, evals
    emulated = precision == "bf16" and not cpu_multiplies_bf16()
    assert ("bf16 is emulated" in proc.stdout) == emulated, proc.stdout


@pytest.mark.gpu
def test_ddpg_learns_reach_on_cuda_and_its_checkpoint_evaluates_on_cpu(cli, tmp_path):
    cli(
        "algo=ddpg",
        "env=Reach",
        "device=cuda",
        "eval.every_frames=0",
        *FAST,
        "hydra.run.dir=run",
        check=True,
    )
    evals = [r["eval/return_mean"] for r in metrics(tmp_path / "run") if "eval/return_mean" in r]
    assert len(evals) == 1 and evals[0] > REACH_LEARNED, evals
    proc = cli("mode=eval", "load=run", "device=cpu", "eval.episodes=2", *FAST, "hydra.run.dir=ev")
    assert proc.returncode == 0, proc.stderr
    assert last_json_line(proc.stdout)["episodes"] == 2


_UPDATE_FAULTS = """
import resource, sys
import gymnasium as gym, numpy as np, torch
from omegaconf import OmegaConf
from pixelrl.algos.ddpg import DDPG
from pixelrl.app import _set_threads
from pixelrl.config import DDPGConfig
if sys.argv[1] == "app":
    _set_threads(OmegaConf.create({"torch_threads": 1}))
else:
    torch.set_num_threads(1)
cfg = OmegaConf.create({"algo": OmegaConf.structured(DDPGConfig)})
box = gym.spaces.Box
agent = DDPG(cfg, box(0, 255, (9, 84, 84), np.uint8), box(-1, 1, (1,)), torch.device("cpu"))
n = 16
batch = {"obs": torch.randint(0, 255, (n, 9, 84, 84), dtype=torch.uint8), "action": torch.zeros(n, 1),
         "reward": torch.zeros(n), "discount": torch.ones(n)}
batch["next_obs"] = batch["obs"].clone()
for _ in range(5):  # warm up: the heap grows to what an update needs
    agent.update(batch, 0.2)
per_update = []
for _ in range(9):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    agent.update(batch, 0.2)
    per_update.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(per_update)[len(per_update) // 2])  # the median update: the heap may still grow once
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_app_keeps_freed_memory_so_updates_do_not_page_fault():
    # glibc's default hands each update's freed activations back to the kernel, and the next
    # update faults them in again page by page; the app keeps them (device.keep_freed_memory).
    # Both children start from glibc's static thresholds (128 KiB): left to itself glibc raises
    # them after some frees, so its own count ran from 1 to 5,778 per update from run to run
    static = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}

    def faults(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", _UPDATE_FAULTS, mode],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **static},
        )
        return int(out.stdout.split()[-1])

    default, app = faults("default"), faults("app")
    # about 27,700 faults in each update at the static thresholds on a 2-core AMD EPYC, 0 with the
    # app's settings
    assert default >= 200
    assert app * 10 < default
