"""Frame pipeline: our recipe vs gymnasium's, stack order, shapes, vector signals, backends."""

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from omegaconf import OmegaConf

import pixelrl
from pixelrl.config import AtariEnvConfig, ToyEnvConfig
from pixelrl.envs import EVAL, TRAIN, atari, make_vector_env
from pixelrl.envs.toy import Catch


def atari_cfg(**kw):
    base = {"name": "test", "game": "pong"}
    base.update(kw)
    return OmegaConf.structured(AtariEnvConfig(**base))


@pytest.mark.parametrize("game,sticky", [("pong", 0.0), ("breakout", 0.25)])
def test_recipe_equals_gymnasium_atari_preprocessing(game, sticky):
    """Our opencv recipe == AtariPreprocessing + FrameStackObservation, frame for frame."""
    import ale_py

    gym.register_envs(ale_py)
    ours = atari.make_single(atari_cfg(game=game, sticky_actions=sticky, fire_reset=False))
    env_id = "ALE/" + "".join(w.title() for w in game.split("_")) + "-v5"
    ref = gym.make(env_id, frameskip=1, repeat_action_probability=sticky)
    ref = gym.wrappers.AtariPreprocessing(ref, noop_max=30, frame_skip=4, screen_size=84)
    ref = gym.wrappers.FrameStackObservation(ref, 4)
    rng = np.random.default_rng(1)
    o1, _ = ours.reset(seed=7)
    o2, _ = ref.reset(seed=7)
    np.testing.assert_array_equal(o1, np.asarray(o2))
    episodes = 0
    for _ in range(1500):
        a = int(rng.integers(ours.action_space.n))
        o1, r1, te1, tr1, _ = ours.step(a)
        o2, r2, te2, tr2, _ = ref.step(a)
        np.testing.assert_array_equal(o1, np.asarray(o2))
        assert (r1, te1, tr1) == (r2, te2, tr2)
        if te1 or tr1:
            episodes += 1
            o1, _ = ours.reset()
            o2, _ = ref.reset()
            np.testing.assert_array_equal(o1, np.asarray(o2))
    assert o1.dtype == np.uint8 and o1.shape == (4, 84, 84)


def test_frame_stack_order_oldest_first():
    env = atari.make_single(atari_cfg())
    obs, _ = env.reset(seed=0)
    assert all(np.array_equal(obs[0], obs[i]) for i in range(4))  # padded with the first frame
    prev = obs
    changed = False
    for _ in range(40):
        obs, *_ = env.step(2)
        np.testing.assert_array_equal(obs[:3], prev[1:])  # shifted by one, newest last
        changed |= not np.array_equal(obs[3], prev[3])
        prev = obs
    assert changed


@pytest.mark.parametrize("backend", ["sync", "procs", "ale_vector", "async"])
def test_backends_shape_dtype_and_episode_info(backend):
    env = make_vector_env(atari_cfg(), 2, mode=TRAIN, backend=backend)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    assert env.single_action_space.n == 6 and env.frames_per_step == 4
    rng = np.random.default_rng(0)
    returns = []
    for _ in range(2500):
        obs, r, te, tr, info = env.step(rng.integers(0, 6, size=2))
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
        assert set(np.unique(r)) <= {-1.0, 0.0, 1.0}
        if "_episode" in info:
            assert info["final_obs"].shape == obs.shape
            returns += list(info["episode"]["r"][info["_episode"]])
    env.close()
    assert returns, "a random Pong agent loses a game within 2500 steps"
    assert all(-21 <= x <= -15 for x in returns)


@pytest.mark.parametrize("backend", ["sync", "procs", "ale_vector", "async"])
def test_a_partial_reset_restarts_only_the_masked_copy(backend):
    """options={"reset_mask": m} (what an evaluation uses to end a game stuck without points)
    starts the masked copies' episodes over and leaves the others' games and episode counts."""
    cfg = atari_cfg(noop_max=0)  # sticky 0, no no-ops: a game of NOOPs plays the same every time
    env = make_vector_env(cfg, 2, mode=EVAL, backend=backend)
    try:
        start, _ = env.reset(seed=0)
        noop = np.zeros(2, np.int64)
        for _ in range(60):
            before, *_ = env.step(noop)
        obs, _ = env.reset(options={"reset_mask": np.array([True, False])})
        np.testing.assert_array_equal(obs[0], start[0])
        np.testing.assert_array_equal(obs[1], before[1])
        ends = {}
        for t in range(1, 5000):
            _, _, _, _, info = env.step(noop)
            for i in np.flatnonzero(info.get("_episode", [])):
                ends.setdefault(int(i), (t, info["episode"]["r"][i], info["episode"]["l"][i]))
            if len(ends) == 2:
                break
    finally:
        env.close()
    # copy 1 played one game straight through; copy 0 the same game, started 60 steps later
    (t0, r0, l0), (t1, r1, l1) = ends[0], ends[1]
    assert r0 == r1 == -21 and l0 == l1 == t1 + 60 and t0 == t1 + 60


@pytest.mark.parametrize("backend", ["sync", "procs", "async", "ale_vector"])
def test_a_reset_can_name_its_no_op_start(backend):
    """options={"noop_start": j} (eval.noop_sweep) starts the game from the env's j-th start: our
    recipe after j + 1 no-ops, ale-py's vector env j frames in (FIRE, then j - 1 no-ops). A game
    of NOOPs at sticky 0 is the same emulator frames from power-on whatever the start, so 8
    frames more make it exactly 2 agent steps (frame skip 4) shorter, and equal starts give
    equal games."""
    env = make_vector_env(atari_cfg(), 2, mode=EVAL, backend=backend)
    noop = np.zeros(2, np.int64)
    lengths = {}
    try:
        for starts in ([1, 9], [13, 13]):
            env.reset(seed=0)  # the starts these seeds draw are neither pair
            for i, j in enumerate(starts):
                env.reset(options={"reset_mask": np.arange(2) == i, "noop_start": j})
            ends = {}
            for _ in range(5000):
                _, _, _, _, info = env.step(noop)
                for i in np.flatnonzero(info.get("_episode", [])):
                    ends.setdefault(int(i), (info["episode"]["r"][i], info["episode"]["l"][i]))
                if len(ends) == 2:
                    break
            assert ends[0][0] == ends[1][0] == -21
            lengths[tuple(starts)] = (ends[0][1], ends[1][1])
    finally:
        env.close()
    (a, b), (c, d) = lengths[(1, 9)], lengths[(13, 13)]
    assert a == b + 2 and c == d and a == c + 3


def test_ale_vector_starts_are_checked_against_the_frame_number():
    """The seed AleNoopStarts picks for a start must make ale-py's reset draw it: every start of
    [0, noop_max) on one copy, each game begun where its start says; a start out of range is an
    error."""
    env = atari.AleNoopStarts(atari.make_ale_vector(atari_cfg(noop_max=6), 1, 1), 6)
    try:
        env.reset(seed=0)
        frames = []
        for j in range(6):
            _, info = env.reset(options={"reset_mask": np.array([True]), "noop_start": j})
            frames.append(int(info["episode_frame_number"][0]))
        with pytest.raises(ValueError, match="not in"):
            env.reset(options={"reset_mask": np.array([True]), "noop_start": 6})
    finally:
        env.close()
    assert frames == [1, 1, 2, 3, 4, 5]  # FIRE, then j - 1 no-ops


def test_episodic_life_and_raw_returns_on_breakout():
    """Train mode: a lost life terminates for the learner, the game goes on, and the logged
    episode return is the raw game score over all lives."""
    cfg = atari_cfg(game="breakout")
    env = make_vector_env(cfg, 1, mode=TRAIN, backend="sync")
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    life_ends, game_ends, raw_sum = 0, 0, 0.0
    for _ in range(3000):
        _, r, te, tr, info = env.step(rng.integers(0, 4, size=1))
        raw_sum += float(r[0])
        if "_episode" in info and info["_episode"][0]:
            game_ends += 1
            assert info["episode"]["r"][0] == pytest.approx(raw_sum)  # rewards are 0/1 here
            raw_sum = 0.0
            break
        if te[0]:
            life_ends += 1
    env.close()
    assert game_ends == 1 and life_ends == 4  # 5 lives: 4 life losses, then game over


def test_eval_mode_has_no_training_signals():
    cfg = atari_cfg(game="breakout")
    env = make_vector_env(cfg, 1, mode=EVAL, backend="sync")
    assert not env.episodic_life and not env.clip_rewards
    env.close()


def _actions_take_effect(env_cfg, mode) -> bool:
    """Pong from one seed, 30 steps of RIGHT (paddle up) against 30 of LEFT (down): different
    frames unless sticky actions 1.0 repeat the first action forever."""
    env = make_vector_env(env_cfg, 1, mode=mode)
    finals = []
    for action in (2, 3):
        obs, _ = env.reset(seed=3)
        for _ in range(30):
            obs, *_ = env.step(np.array([action]))
        finals.append(obs)
    env.close()
    return not np.array_equal(finals[0], finals[1])


@pytest.mark.parametrize("eval_sticky", [None, 1.0])
def test_eval_sticky_actions_sets_the_evaluation_envs_own(eval_sticky):
    """eval.sticky_actions=1.0 repeats the first action forever; unset (env.sticky_actions=0
    here) the agent's actions take effect."""
    from pixelrl.evaluate import eval_env_config

    extra = [f"eval.sticky_actions={'null' if eval_sticky is None else eval_sticky}"]
    cfg = pixelrl.compose_config(["algo=a3c", "env=Pong", "env.sticky_actions=0.0", *extra])
    assert cfg.env.sticky_actions == 0.0  # training keeps its own
    assert _actions_take_effect(eval_env_config(cfg), EVAL) == (eval_sticky != 1.0)


def test_a3c_workers_train_at_their_entry_of_worker_sticky_actions(monkeypatch):
    """algo.worker_sticky_actions=[0.0, 1.0]: worker 1 (and 3) repeat their first action
    forever; worker 0's actions take effect. Evaluations keep env.sticky_actions."""
    from pixelrl.algos import a3c
    from pixelrl.algos.a3c import worker_env
    from pixelrl.evaluate import eval_env_config

    args = ["algo=a3c", "env=Pong", "env.sticky_actions=0.0", "eval.sticky_actions=null"]
    cfg = pixelrl.compose_config([*args, "algo.worker_sticky_actions=[0.0,1.0]"])
    assert [worker_env(cfg, r).sticky_actions for r in range(4)] == [0.0, 1.0, 0.0, 1.0]
    assert eval_env_config(cfg).sticky_actions == cfg.env.sticky_actions == 0.0
    assert [_actions_take_effect(worker_env(cfg, r), TRAIN) for r in (0, 1)] == [True, False]
    built = []  # the learners build their envs from it

    def spy(env_cfg, *args, **kwargs):
        built.append(env_cfg.sticky_actions)
        return make_vector_env(env_cfg, *args, **kwargs)

    monkeypatch.setattr(a3c, "make_vector_env", spy)
    for rank in (0, 1):
        a3c.Learner(rank, cfg, None, None, None, None).close()
    assert built == [0.0, 1.0]
    plain = pixelrl.compose_config(["algo=a3c", "env=Pong"])
    assert worker_env(plain, 1) is plain.env


@pytest.mark.parametrize("backend", ["sync", "ale_vector"])
def test_action_set_maps_agent_action_i_to_the_ith_listed_ale_action(backend):
    """env.action_set=[2, 3] (pg-pong's UP, DOWN): agent action 0 must play Pong's action 2 and
    agent action 1 its action 3, frame for frame the same game as the full action set."""
    sub = make_vector_env(atari_cfg(action_set=[2, 3]), 1, mode=TRAIN, backend=backend)
    full = make_vector_env(atari_cfg(), 1, mode=TRAIN, backend=backend)
    assert sub.single_action_space.n == 2 and full.single_action_space.n == 6
    rng = np.random.default_rng(0)
    agent_actions = rng.integers(0, 2, size=150)
    finals = {}
    for mapping in ([2, 3], [3, 2]):
        o_sub, _ = sub.reset(seed=4)
        o_full, _ = full.reset(seed=4)
        same = True
        for a in agent_actions:
            o_sub, *_ = sub.step(np.array([a]))
            o_full, *_ = full.step(np.array([mapping[a]]))
            same &= np.array_equal(o_sub, o_full)
        finals[tuple(mapping)] = same
    sub.close()
    full.close()
    assert finals[(2, 3)], "agent action i must be the i-th action of env.action_set"
    assert not finals[(3, 2)], "the other mapping plays another game (the test can tell)"


def test_clipped_training_rewards_keep_the_raw_game_score():
    """Training clips each reward to its sign for the learner, but the logged episode return is
    the raw game score: Space Invaders pays 5-30 points per invader."""
    cfg = atari_cfg(game="space_invaders")
    train = make_vector_env(cfg, 1, mode=TRAIN, backend="sync")
    raw = make_vector_env(cfg, 1, mode=EVAL, backend="sync")  # the same game, unclipped
    train.reset(seed=1)
    raw.reset(seed=1)
    rng = np.random.default_rng(0)
    score, largest, logged = 0.0, 0.0, None
    for _ in range(5000):
        a = rng.integers(train.single_action_space.n, size=1)
        _, r_train, _, _, info = train.step(a)
        _, r_raw, _, _, raw_info = raw.step(a)
        assert r_train[0] == np.sign(r_raw[0])  # the learner sees clipped rewards
        score += float(r_raw[0])
        largest = max(largest, float(r_raw[0]))
        if "_episode" in raw_info and raw_info["_episode"][0]:
            assert info["_episode"][0]  # the game ended for both
            logged = float(info["episode"]["r"][0])
            break
    train.close()
    raw.close()
    assert largest > 1, "the test needs rewards that clipping changes"
    assert logged == score == float(raw_info["episode"]["r"][0])


def test_procs_backend_steps_only_active_envs():
    cfg = OmegaConf.structured(ToyEnvConfig(name="Catch"))
    env = make_vector_env(cfg, 3, mode=TRAIN, backend="procs")
    obs, _ = env.reset(seed=0)
    active = np.array([True, False, True])
    obs2, r, te, tr, _ = env.step(np.array([1, 1, 1]), active=active)
    np.testing.assert_array_equal(obs2[1], obs[1])  # the inactive env stood still
    assert not np.array_equal(obs2[0], obs[0])  # the ball fell one row
    env.close()


def test_catch_dynamics_and_random_baseline():
    env = Catch(rows=10, cols=5, scale=2)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (1, 20, 10) and obs.dtype == np.uint8
    assert (obs > 0).sum() == 2 * 4  # ball and paddle, 2x2 pixels each
    rng = np.random.default_rng(0)
    total, n = 0.0, 300
    for _ in range(n):
        env.reset(seed=int(rng.integers(1 << 30)))
        steps = 0
        while True:
            _, r, te, tr, _ = env.step(int(rng.integers(3)))
            steps += 1
            if te:
                total += r
                break
        assert steps == 9
    assert -0.85 < total / n < -0.35  # a random paddle mostly misses


@pytest.mark.parametrize("rows,cols,scale", [(10, 5, 2), (3, 2, 1), (12, 7, 3)])
def test_catch_frame_is_the_grid_scaled_up(rows, cols, scale):
    """Each cell of the rows x cols grid (ball, paddle: 255) becomes a scale x scale block."""
    env, rng = Catch(rows, cols, scale), np.random.default_rng(1)
    obs, _ = env.reset(seed=3)
    for _ in range(60):
        grid = np.zeros((rows, cols), np.uint8)
        grid[env._ball] = grid[rows - 1, env._paddle] = 255
        expected = np.kron(grid, np.ones((scale, scale), np.uint8))[None]
        assert obs.dtype == np.uint8 and obs.shape == env.observation_space.shape
        np.testing.assert_array_equal(obs, expected)
        obs, _, terminated, _, _ = env.step(int(rng.integers(3)))
        if terminated:
            obs, _ = env.reset()


def test_opencv_is_imported_only_by_a_run_that_resizes_frames():
    """Catch and Pong on ale_vector never resize in Python: their processes skip cv2's import;
    the first resize imports it, with one thread."""
    script = """
import sys
from omegaconf import OmegaConf
from pixelrl.config import AtariEnvConfig, ToyEnvConfig
from pixelrl.envs import TRAIN, make_vector_env
for cfg in (ToyEnvConfig(name="Catch"), AtariEnvConfig(name="Pong", game="pong")):
    envs = make_vector_env(OmegaConf.structured(cfg), 2, mode=TRAIN)
    envs.reset(seed=0)
    envs.step(envs.action_space.sample())
    envs.close()
print("cv2" in sys.modules)
envs = make_vector_env(OmegaConf.structured(AtariEnvConfig(name="Pong", game="pong")), 1,
                       backend="sync")
envs.reset(seed=0)
import cv2
print("cv2" in sys.modules, cv2.getNumThreads())
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True", "1"]


def test_catch_perfect_policy_scores_one():
    env = Catch()
    for seed in range(20):
        env.reset(seed=seed)
        while True:
            ball_col, paddle = env._ball[1], env._paddle
            _, r, te, _, _ = env.step(1 + int(np.sign(ball_col - paddle)))
            if te:
                assert r == 1.0
                break


def test_make_env_api_matches_training_env():
    env = pixelrl.make_env("Catch", seed=5, num_envs=3)
    obs, _ = env.reset()
    assert obs.shape == (3, 1, 20, 10)
    env2 = pixelrl.make_env("Catch", seed=5, num_envs=3)
    obs2, _ = env2.reset()
    np.testing.assert_array_equal(obs, obs2)  # `seed` seeds the first reset
    env.close()
    env2.close()
    pong = pixelrl.make_env("Pong", num_envs=2, backend="sync")
    assert pong.single_observation_space.shape == (4, 84, 84)
    pong.close()
