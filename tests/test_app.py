"""The app (pixelrl/app.py): the config checks it gathers, the process settings it makes, and
how a checkpoint's config meets a new command line."""

import json
import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

import pixelrl
from pixelrl.app import check_config, compose_config
from pixelrl.errors import ConfigError

from .conftest import CLI_TIMEOUT_S, FAST


@pytest.mark.parametrize(
    "overrides,expected",
    [
        # the schema's own ranges
        (["algo.n_steps=0"], "algo.n_steps=0 is out of range; it must be > 0"),
        # the device's
        (["device=gpu"], "device='gpu' is not allowed; choose one of: auto, cpu, cuda"),
        # the env family's (Atari)
        (["env=atari", "env.game=zelda"], "env.game='zelda' is not an ALE ROM id"),
        (
            ["env.frame_skip_range=[2,4]"],
            "env.frame_skip_range=[2, 4] needs env.preprocess=karpathy",
        ),
        # the app's cross checks
        (["env=Catch", "eval.sticky_actions=0.25"], "eval.sticky_actions is for Atari envs"),
        (["eval.sticky_actions=1.5"], "eval.sticky_actions=1.5 is out of range"),
        (
            ["env=Catch", "eval.select_sticky_actions=0.25"],
            "eval.select_sticky_actions is for Atari envs",
        ),
        (["eval.select_sticky_actions=-0.5"], "eval.select_sticky_actions=-0.5 is out of range"),
        (
            ["algo=ddpg", "env=Reach", "eval.average_frames=10000"],
            "eval.average_frames averages the policy of a3c, actor_critic and reinforce",
        ),
        (["eval.average_frames=-1"], "eval.average_frames=-1 is out of range"),
        # the algorithm's (A3C, REINFORCE, DDPG)
        (
            ["algo=a3c", "env=Catch", "algo.worker_sticky_actions=[0.25]"],
            "algo.worker_sticky_actions is for Atari envs",
        ),
        (
            ["algo.worker_sticky_actions=[0.0,1.5]"],
            "algo.worker_sticky_actions=[0.0, 1.5] must hold probabilities in [0, 1]",
        ),
        (
            ["algo=actor_critic", "algo.num_envs=6", "algo.env_groups=4"],
            "algo.env_groups=4 must divide algo.num_envs=6",
        ),
        (["algo=a3c", "algo.env_groups=2"], "algo.env_groups=2 is A2C's (algo=actor_critic)"),
        (["algo=reinforce", "algo.num_envs=12"], "algo.num_envs=12 must be <= algo.batch_episodes"),
        (
            ["algo=ddpg", "env=Reach", "algo.augment=false", "algo.q_augs=2"],
            "algo.q_augs=2 averages over random shifts, but algo.augment=false",
        ),
        (
            ["algo=reinforce", "env=Catch", "algo.collector=workers", "model.mlp_layers=2"],
            "algo.collector=workers is not possible here",
        ),
        (
            ["algo=a3c", "algo.lr_decay_from=1000"],
            "algo.lr_decay=none keeps the lr: add algo.lr_decay=linear",
        ),
    ],
)
def test_check_config_gathers_every_layers_checks(overrides, expected):
    cfg = compose_config(overrides, check=False)
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_the_lists_of_envs_in_errors_come_from_conf():
    with pytest.raises(ConfigError, match="continuous envs: CarRacing, dmc, Pendulum, Reach"):
        check_config(compose_config(["algo=ddpg", "env=Pong"], check=False))
    with pytest.raises(ConfigError, match="discrete env: atari, Breakout, Catch, Pong"):
        check_config(compose_config(["algo=a3c", "env=Reach"], check=False))


def test_an_algo_env_pairing_file_applies_only_to_its_pair():
    reach = compose_config(["algo=ddpg", "env=Reach"])
    pendulum = compose_config(["algo=ddpg", "env=Pendulum"])
    assert (reach.algo.encoder, reach.algo.batch_size) == ("a3c", 32)  # conf/algo_env/ddpg_Reach
    assert (pendulum.algo.encoder, pendulum.algo.batch_size) == ("drq", 256)  # DDPG's defaults
    assert reach.env.resolution == 32 and reach.total_frames == 3_000  # the env's own keys
    # the default command takes conf/algo_env/a3c_Pong's 10-step returns and A2C on Pong its own
    # pairing's (actor_critic_Pong); other pairings, the schema's 5, and the command line wins
    # over the pairing file
    pairs = [
        (),
        ("env=Breakout",),
        ("env=Catch",),
        ("algo=actor_critic",),
        ("algo=actor_critic", "env=Catch"),
    ]
    steps = {pair: compose_config(list(pair)).algo.n_steps for pair in pairs}
    assert steps == {
        (): 10,
        ("env=Breakout",): 5,
        ("env=Catch",): 5,
        ("algo=actor_critic",): 10,
        ("algo=actor_critic", "env=Catch"): 5,
    }
    a2c_pong = compose_config(["algo=actor_critic"])
    assert (a2c_pong.model.trunk, a2c_pong.model.center, a2c_pong.algo.lr_decay) == (
        "a3c",
        True,
        "none",
    )
    assert compose_config(["algo.n_steps=7"]).algo.n_steps == 7


def test_a_run_resumes_with_the_n_steps_it_was_trained_with():
    """An A3C Pong run from before conf/algo_env/a3c_Pong.yaml learned from 5-step returns: its
    saved config keeps them on resume; `algo.n_steps` on the resume command line still wins."""
    from pixelrl.app import config_from_checkpoint

    trained = compose_config(["algo.n_steps=5"])
    payload = {"config": OmegaConf.to_container(trained, resolve=True)}
    for overrides, n_steps in [(["resume=r"], 5), (["resume=r", "algo.n_steps=20"], 20)]:
        cli_cfg = compose_config(overrides)
        assert config_from_checkpoint(payload, cli_cfg, overrides, "resume").algo.n_steps == n_steps


def test_an_a3c_pong_run_from_before_two_passes_resumes_and_loads_as_it_was_trained():
    """A3C Pong takes two passes per rollout and averaged weights from 5862dd5 on: a run saved
    before algo.epochs / eval.average_frames existed keeps one pass and plain weights; `load=`
    scores a run at its own evaluation settings, not at the default pairing's, unless named."""
    from pixelrl.app import config_from_checkpoint

    old = OmegaConf.to_container(compose_config(["env.sticky_actions=0.0"]), resolve=True)
    del old["algo"]["epochs"], old["eval"]["average_frames"], old["eval"]["sticky_actions"]
    del old["eval"]["select_sticky_actions"]
    payload = {"config": old}
    for what, overrides in [("resume", ["resume=r"]), ("load", ["mode=eval", "load=r"])]:
        cfg = config_from_checkpoint(payload, compose_config(overrides), overrides, what)
        assert (cfg.algo.epochs, cfg.eval.average_frames, cfg.eval.sticky_actions) == (1, 0, None)
        assert cfg.eval.select_sticky_actions is None  # its evaluations past a solve as they were
        assert cfg.env.sticky_actions == 0.0
    catch = {"config": OmegaConf.to_container(compose_config(["env=Catch"]), resolve=True)}
    overrides = ["mode=eval", "load=r"]
    cfg = config_from_checkpoint(catch, compose_config(overrides), overrides, "load")
    assert cfg.eval.sticky_actions is None and cfg.eval.average_frames == 0
    pong = {"config": OmegaConf.to_container(compose_config([]), resolve=True)}
    overrides = ["mode=eval", "load=r", "eval.sticky_actions=0.25", "eval.episodes=30"]
    cfg = config_from_checkpoint(pong, compose_config(overrides), overrides, "load")
    assert (cfg.eval.sticky_actions, cfg.eval.episodes, cfg.eval.average_frames) == (
        0.25,
        30,
        2_000_000,
    )


def test_the_app_flushes_denormals():
    # a confident policy's backward pass is full of denormals, which x86 computes ~100x slower
    from omegaconf import OmegaConf

    from pixelrl.app import _set_threads

    tiny = torch.tensor([1e-39], dtype=torch.float32)
    try:
        _set_threads(OmegaConf.create({"torch_threads": 0}))
        assert float((tiny * 1.0)[0]) == 0.0
    finally:
        torch.set_flush_denormal(False)
    assert float((tiny * 1.0)[0]) > 0.0


def test_resume_keeps_the_runs_own_settings_unless_named():
    """A resumed run goes on with its evaluation / logging / checkpoint settings; a key named on
    the resume command line wins. eval / watch take run-level settings from their command line."""
    from pixelrl.app import config_from_checkpoint

    trained = pixelrl.compose_config(
        ["experiment=karpathy_pong", "logger.print_every_s=120", "eval.episodes=3"]
    )
    payload = {"config": OmegaConf.to_container(trained, resolve=True)}
    overrides = ["resume=somewhere", "eval.episodes=5"]
    cli_cfg = pixelrl.compose_config(overrides)
    cfg = config_from_checkpoint(payload, cli_cfg, overrides, "resume")
    assert cfg.algo.name == "reinforce" and cfg.resume == "somewhere"
    assert cfg.eval.every_frames == trained.eval.every_frames == 5_000_000
    assert cfg.logger.print_every_s == 120 and cfg.eval.episodes == 5
    assert cfg.checkpoint.every_frames == trained.checkpoint.every_frames
    watch = config_from_checkpoint(payload, cli_cfg, overrides, "load")
    assert watch.eval.every_frames == cli_cfg.eval.every_frames != 5_000_000


def test_a_resumed_run_goes_online_only_when_its_command_line_says_so():
    from pixelrl.app import config_from_checkpoint

    trained = compose_config(["algo=actor_critic", "env=Catch"], check=False)
    trained.logger.wandb.mode = "online"  # trained online, somewhere with credentials
    payload = {"config": OmegaConf.to_container(trained, resolve=True)}
    plain = ["resume=somewhere"]
    cfg = config_from_checkpoint(payload, compose_config(plain, check=False), plain, "resume")
    assert cfg.logger.wandb.mode == "offline"
    online = ["resume=somewhere", "logger.wandb.mode=online"]
    cfg = config_from_checkpoint(payload, compose_config(online, check=False), online, "resume")
    assert cfg.logger.wandb.mode == "online"


def test_resume_and_load_accept_the_run_s_own_algo_and_env_on_the_command_line():
    """`algo=a3c resume=RUN` (which --help suggests for a run whose algo.* keys are named) and
    `env=Pong load=RUN` name the checkpoint's own groups: they are checked, not merged as keys."""
    from pixelrl.app import config_from_checkpoint

    trained = compose_config(["algo=actor_critic", "env=Catch"], check=False)
    payload = {"config": OmegaConf.to_container(trained, resolve=True)}
    for what, key in (("resume", "resume"), ("load", "load")):
        named = ["algo=actor_critic", "env=Catch", f"{key}=somewhere", "env.max_episode_frames=300"]
        cli_cfg = compose_config(named, check=False)
        cfg = config_from_checkpoint(payload, cli_cfg, named, what)
        assert cfg.algo.name == "actor_critic" and cfg.env.name == "Catch"
        assert cfg.env.max_episode_frames == 300
    other = ["algo=a3c", "resume=somewhere"]
    with pytest.raises(ConfigError, match="trained with algo=actor_critic, not algo=a3c"):
        config_from_checkpoint(payload, compose_config(other, check=False), other, "resume")


@pytest.mark.parametrize("algo", ["a3c", "actor_critic"])
def test_a_checkpoint_from_before_model_center_loads_uncentered(algo):
    """A checkpoint written before `model.center` existed was trained on uncentered frames: it
    loads and resumes that way whatever the key's default; one that names the key keeps it."""
    from pixelrl.app import _with_new_defaults

    trained = compose_config([f"algo={algo}", "env=Pong"], check=False)
    saved = OmegaConf.to_container(trained, resolve=True)
    for center in (True, False):
        saved["model"]["center"] = center
        assert _with_new_defaults(OmegaConf.create(saved)).model.center is center
    del saved["model"]["center"]
    assert _with_new_defaults(OmegaConf.create(saved)).model.center is False


# Records OMP_WAIT_POLICY as it is when torch is first imported, then runs the CLI.
_AT_TORCH_IMPORT = """
import os, sys
seen = []
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("OMP_WAIT_POLICY"))
        return None
sys.meta_path.insert(0, Watch())
sys.argv = ["pixelrl", *sys.argv[1:]]
from pixelrl.__main__ import main
try:
    main()
finally:
    print("at torch import:", seen)
"""


@pytest.mark.parametrize("given,expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_threads_sleep_from_before_torch_loads_unless_the_user_says(
    tmp_path, given, expected
):
    """A spinning OpenMP thread takes a core from the work on a busy machine (BENCHMARKS.md), so
    the CLI asks for PASSIVE waiting before torch loads OpenMP; a value the user set wins. The
    run records it in run_info.json."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    proc = subprocess.run(
        [sys.executable, "-c", _AT_TORCH_IMPORT, "algo=actor_critic", "env=Catch",
         "total_frames=500", "eval.every_frames=0", "eval.final=false", *FAST, "hydra.run.dir=run"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"at torch import: ['{expected}']" in proc.stdout, proc.stdout
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["sessions"][-1]["omp_wait_policy"] == expected
