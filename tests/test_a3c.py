"""A3C's process machinery: shared optimizer state, faults, graceful stops, resume."""

import pytest
import torch
import torch.multiprocessing as mp

from pixelrl.errors import TrainingError
from pixelrl.optim import SharedAdam, SharedRMSprop
from pixelrl.workers import WorkerGroup


def _one_step(opt, grad_value):
    grads = [torch.full_like(p, grad_value) for p in opt.params]
    opt.step(grads, track=True)


@pytest.mark.parametrize("cls", [SharedRMSprop, SharedAdam])
def test_a_workers_step_is_visible_to_the_others(cls):
    net = torch.nn.Linear(3, 2)
    net.share_memory()
    opt = cls(net.parameters(), lr=0.01)
    before = [p.detach().clone() for p in net.parameters()]
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_one_step, args=(opt, 1.0))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert int(opt.steps) == 1  # the step count is shared
    stats = opt.square_avg if cls is SharedRMSprop else opt.exp_avg_sq
    assert all(float(s.abs().sum()) > 0 for s in stats)  # so are the statistics
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))  # and the weights
    # a second worker continues from the shared count instead of starting over at 1
    p = ctx.Process(target=_one_step, args=(opt, 1.0))
    p.start()
    p.join(60)
    assert int(opt.steps) == 2


def test_shared_adam_late_worker_does_not_take_an_oversized_first_step():
    """With a shared step count, a worker joining after 200 steps moves weights by about lr,
    not by the 1/(1 - beta1) = 10x of a restarted bias correction."""
    torch.manual_seed(0)
    net = torch.nn.Linear(50, 50)
    opt = SharedAdam(net.parameters(), lr=1e-3)
    for _ in range(200):
        opt.step([torch.randn_like(p) * 0.01 + 0.01 for p in opt.params])
    change = opt.step([torch.randn_like(p) * 0.01 + 0.01 for p in opt.params], track=True)
    assert change < 3e-3


# Stops, killed workers and resumes of A3C runs: tests/test_faults.py.


def test_worker_error_is_reported_with_its_message():
    """A worker that raises sends its error; the main process names the worker and the error."""
    import os

    from omegaconf import OmegaConf

    from pixelrl import compose_config
    from pixelrl.algos import a3c

    cfg = compose_config(["algo=a3c", "env=Catch"])
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    cfg_dict["env"]["kind"] = "bogus"  # make_vector_env raises inside the worker
    shared = torch.nn.Linear(2, 2)
    ctx = mp.get_context("spawn")
    group = WorkerGroup(ctx, "a3c worker")
    value = ctx.Value("q", 0, lock=False)
    args = (cfg_dict, shared, None, ctx.Lock(), group.results, group.stop_event, value, os.getpid())
    group.start(a3c._worker_main, [(rank, *args) for rank in range(2)], "test-a3c")
    try:
        for p in group.procs:
            p.join(60)
            assert p.exitcode == 1
        with pytest.raises(
            TrainingError, match=r"a3c worker [01] failed: ValueError: env.kind='bogus'"
        ):
            group.get()
    finally:
        group.stop()


def test_bf16_rollout_acts_the_same_and_its_gradient_matches_fp32():
    from pixelrl import compose_config
    from pixelrl.algos.a3c import make_policy
    from pixelrl.envs import TRAIN, make_vector_env
    from pixelrl.rollout import collect, loss_from_rollout

    cfg = compose_config(["algo=a3c", "env=Pong"])
    grads, actions = {}, {}
    for bf16 in (False, True):
        envs = make_vector_env(cfg.env, 4, mode=TRAIN, num_threads=1)
        obs, _ = envs.reset(seed=3)
        torch.manual_seed(0)
        net = make_policy(cfg, envs.single_observation_space, envs.single_action_space)
        rollout, _ = collect(
            net, envs, torch.as_tensor(obs), 6, torch.device("cpu"), lambda *_: None, bf16
        )
        envs.close()
        loss, _ = loss_from_rollout(rollout, cfg.algo)
        loss.backward()
        grads[bf16] = torch.cat([p.grad.flatten() for p in net.parameters()])
        actions[bf16] = rollout["actions"]
        assert rollout["logits"].dtype == rollout["values"].dtype == torch.float32
    assert torch.equal(actions[False], actions[True])  # acting is fp32 either way
    cosine = torch.nn.functional.cosine_similarity(grads[False], grads[True], dim=0)
    assert cosine > 0.99
    assert abs(float(grads[True].norm() / grads[False].norm()) - 1) < 0.05


@pytest.mark.parametrize(
    "setting",
    [
        ["env=Catch"],  # an MLP trunk: the fp32 path, later passes forward the kept observations
        ["env=Pong", "algo.precision=bf16", "algo.num_envs=2", "algo.n_steps=3"],  # bf16 path
    ],
    ids=["fp32", "bf16"],
)
def test_each_pass_over_a_rollout_starts_from_the_shared_weights_as_stepped(setting):
    """algo.epochs=3: three optimizer steps per update, each on a gradient taken at the shared
    weights as the previous step left them (the local copy is reloaded between passes)."""
    from pixelrl import compose_config
    from pixelrl.algos import a3c
    from pixelrl.envs import EVAL, make_vector_env
    from pixelrl.optim import make_optimizer

    cfg = compose_config(["algo=a3c", *setting, "algo.epochs=3", "algo.num_workers=0"])
    probe = make_vector_env(cfg.env, 1, mode=EVAL)
    shared = a3c.make_policy(cfg, probe.single_observation_space, probe.single_action_space)
    probe.close()
    optimizer = make_optimizer(cfg.algo, shared.parameters())
    learner = a3c.Learner(0, cfg, shared, optimizer, None, None)
    assert learner.bf16 == ("algo.precision=bf16" in setting)
    stepped_from = []
    real_step = optimizer.step

    def step(grads, **kw):
        local, now = learner.net.state_dict(), shared.state_dict()
        stepped_from.append(all(torch.equal(local[k], now[k]) for k in now))
        return real_step(grads, **kw)

    optimizer.step = step
    try:
        metrics = [learner.update(0)["metrics"] for _ in range(2)]
    finally:
        learner.close()
    assert stepped_from == [True] * 6
    assert all("clip_fraction" in m and "approx_kl" in m for m in metrics)


def test_the_default_pong_command_trains_at_025_and_scores_at_0():
    """The default command (algo=a3c env=Pong, conf/algo_env/a3c_Pong.yaml): trained at sticky
    actions 0.25 with GAE(0.95) and two passes per rollout over 10-step rollouts, evaluating the
    mean of the last 2M frames' weights at sticky actions 0.0 (BENCHMARKS.md); other games keep
    the schema's A3C, and keys named on the command line win."""
    from pixelrl import compose_config
    from pixelrl.evaluate import eval_env_config

    cfg = compose_config([])
    assert (cfg.algo.name, cfg.env.name, cfg.algo.n_steps) == ("a3c", "Pong", 10)
    assert (cfg.algo.psi, cfg.algo.gae_lambda, cfg.algo.epochs) == ("gae", 0.95, 2)
    assert cfg.env.sticky_actions == 0.25 and eval_env_config(cfg).sticky_actions == 0.0
    assert cfg.total_frames == 20_000_000 and cfg.eval.average_frames == 2_000_000
    assert cfg.eval.select_sticky_actions == 0.25  # past a solve: the policy that plays v5 best
    breakout = compose_config(["env=Breakout"])
    assert (breakout.algo.psi, breakout.algo.epochs, breakout.eval.average_frames) == (
        "advantage",
        1,
        0,
    )
    assert breakout.env.sticky_actions == 0.0 and eval_env_config(breakout).sticky_actions == 0.0
    assert breakout.eval.select_sticky_actions is None
    cfg = compose_config(["env.sticky_actions=0.0", "algo.epochs=1", "eval.average_frames=0"])
    assert (cfg.env.sticky_actions, cfg.algo.epochs, cfg.eval.average_frames) == (0.0, 1, 0)


def test_the_sticky_pong_preset_is_the_default_scored_at_025():
    """experiment=a3c_pong_sticky: the default Pong command with its evaluations at sticky actions
    0.25 too; keys named on the command line still win."""
    from pixelrl import compose_config
    from pixelrl.evaluate import eval_env_config

    default, cfg = compose_config([]), compose_config(["experiment=a3c_pong_sticky"])
    assert eval_env_config(cfg).sticky_actions == 0.25
    same = ("algo", "env", "model", "total_frames")
    assert all(cfg[key] == default[key] for key in same)
    assert cfg.eval.average_frames == default.eval.average_frames == 2_000_000
    cfg = compose_config(["experiment=a3c_pong_sticky", "eval.sticky_actions=0.0", "seed=3"])
    assert eval_env_config(cfg).sticky_actions == 0.0 and cfg.seed == 3


def test_the_64_env_a2c_pong_preset_is_the_measured_recipe():
    """experiment=a2c_pong_64: A2C's Pong preset (A3C trunk, centered frames, 10-step returns,
    constant lr) with 64 envs in two groups, four clipped passes per rollout at half the lr
    (BENCHMARKS.md)."""
    from pixelrl import compose_config

    cfg = compose_config(["experiment=a2c_pong_64"])
    assert (cfg.algo.name, cfg.env.name, cfg.model.trunk, cfg.model.center) == (
        "actor_critic",
        "Pong",
        "a3c",
        True,
    )
    assert (cfg.algo.n_steps, cfg.algo.lr_decay) == (10, "none")
    assert (cfg.algo.num_envs, cfg.algo.env_groups, cfg.algo.epochs) == (64, 2, 4)
    assert cfg.algo.lr == 3.5e-4
    assert compose_config(["experiment=a2c_pong_64", "algo.lr=1e-4"]).algo.lr == 1e-4
