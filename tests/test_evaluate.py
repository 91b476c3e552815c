"""Greedy evaluation: `play` and its early stop once a target mean is out of reach."""

from __future__ import annotations

import numpy as np
import pytest

from pixelrl.evaluate import GaveUp, Hopeless, play


class ScriptedEnv:
    """A vector env whose copy i plays episodes whose rewards are `episodes[i][k]` (a list per
    episode, one reward per step); actions are ignored."""

    def __init__(self, episodes: list[list[list[float]]]):
        self.script = episodes
        self.num_envs = len(episodes)
        self.resets: list[np.ndarray] = []  # the masks of partial resets

    def reset(self, seed=None, options=None):
        """All copies from their first episode, or (gymnasium's partial reset) the copies in
        `options["reset_mask"]` from their next one."""
        mask = (options or {}).get("reset_mask")
        if mask is None:
            self.episode = [0] * self.num_envs
            self.t = [0] * self.num_envs
        else:
            assert mask.dtype == np.bool_ and mask.any()  # as gymnasium's backends require
            self.resets.append(mask.copy())
            for i in np.flatnonzero(mask):
                self.episode[i] += 1
                self.t[i] = 0
        return np.zeros((self.num_envs, 1)), {}

    def step(self, actions):
        reward = np.zeros(self.num_envs)
        ended = np.zeros(self.num_envs, bool)
        returns = np.zeros(self.num_envs)
        for i in range(self.num_envs):
            rewards = self.script[i][self.episode[i] % len(self.script[i])]
            reward[i] = rewards[self.t[i]]
            self.t[i] += 1
            if self.t[i] == len(rewards):
                ended[i], returns[i] = True, sum(rewards)
                self.episode[i] += 1
                self.t[i] = 0
        info = {}
        if ended.any():
            info = {"_episode": ended, "episode": {"r": returns, "l": np.full(self.num_envs, 3)}}
        return np.zeros((self.num_envs, 1)), reward, ended, ended, info


def _act(obs):
    return np.zeros(len(obs), np.int64)


def test_play_gives_up_once_the_target_is_out_of_reach_and_not_before():
    # 2 copies, 2 episodes each, max return 3: the first copy concedes a point at step 1
    script = [[[-1, 1, 1], [1, 1, 1]], [[1, 1, 1], [1, 1, 1]]]
    full = play(_act, ScriptedEnv(script), 4, seed=0)
    assert sorted(full[0]) == [1.0, 3.0, 3.0, 3.0]  # mean 2.5
    # a target of 2.5 stays reachable: the same result as without the early stop
    same = play(_act, ScriptedEnv(script), 4, seed=0, hopeless=Hopeless(2.5, 3.0))
    assert same == full
    # 2.8 is out of reach after the first step: the conceded point makes the first episode at
    # most 2, so the mean at most (2 + 3 * 3) / 4 = 2.75
    gave_up = play(_act, ScriptedEnv(script), 4, seed=0, hopeless=Hopeless(2.8, 3.0))
    assert isinstance(gave_up, GaveUp)
    assert gave_up.steps == 1 and gave_up.episodes == 0
    assert gave_up.bound == pytest.approx((2 + 3 * 3) / 4)


def test_the_bound_counts_finished_returns_and_the_episodes_not_yet_started():
    # one copy, three episodes (returns 0, 3, 0); max return 3
    script = [[[1, -1, 0], [1, 1, 1]]]
    # step 2 concedes a point: at most (2 + 3 + 3) / 3; step 3 ends at 0: at most (0 + 3 + 3) / 3
    gave_up = play(_act, ScriptedEnv(script), 3, seed=0, hopeless=Hopeless(2.7, 3.0))
    assert (gave_up.steps, gave_up.episodes) == (2, 0)
    assert gave_up.bound == pytest.approx(8 / 3)
    gave_up = play(_act, ScriptedEnv(script), 3, seed=0, hopeless=Hopeless(2.5, 3.0))
    assert (gave_up.steps, gave_up.episodes, gave_up.bound) == (3, 1, pytest.approx(2.0))
    # a target equal to the final mean is never out of reach: the whole evaluation is played
    assert play(_act, ScriptedEnv(script), 3, 0, hopeless=Hopeless(1.0, 3.0)) == (
        [0.0, 3.0, 0.0],
        [3, 3, 3],
        0,
        None,
    )


def test_an_episode_without_a_reward_for_max_quiet_steps_ends_as_it_stands():
    # copy 0: a point, then nothing for 6 steps, then a point; then an episode of 2 points.
    # copy 1: its quiet stretch of 3 steps ends with a point (ends only at max_quiet = 4)
    script = [[[1, 0, 0, 0, 0, 0, 0, 1], [1, 1]], [[0, 0, 0, 1], [1, 1]]]
    env = ScriptedEnv(script)
    full = play(_act, env, 4, seed=0)
    assert (sorted(full.returns), full.stalled, env.resets) == ([1.0, 2.0, 2.0, 2.0], 0, [])
    env = ScriptedEnv(script)
    played = play(_act, env, 4, seed=0, max_quiet=4)
    # copy 0's first episode ends at its 5th step with the 1 it had; it starts its next at once
    assert played.stalled == 1
    assert sorted(zip(played.returns, played.lengths)) == [(1.0, 3), (1.0, 5), (2.0, 3), (2.0, 3)]
    assert [m.tolist() for m in env.resets] == [[True, False]]
    # a copy that has played its share is not restarted when it stalls (nor counted)
    env = ScriptedEnv(script)
    played = play(_act, env, 2, seed=0, max_quiet=4)
    assert (sorted(played.returns), played.stalled, env.resets) == ([1.0, 1.0], 1, [])


class NoopScriptedEnv(ScriptedEnv):
    """ScriptedEnv whose copies play, after a reset that names a no-op start j, the episode
    `games[j]` (a full reset: the episode `games[-1]`); it keeps every reset's options."""

    def __init__(self, num_envs: int, games: dict[int, list[float]]):
        super().__init__([[games[-1]] for _ in range(num_envs)])
        self.games = games
        self.options: list[dict] = []

    def reset(self, seed=None, options=None):
        obs, info = super().reset(seed, options)
        if options is not None:
            self.options.append(options)
            for i in np.flatnonzero(options["reset_mask"]):
                self.script[i] = [self.games[options["noop_start"]]]
                self.episode[i] = 0
        return obs, info


def test_named_no_op_starts_start_every_game_in_turn():
    """eval.noop_sweep: game k starts from no-op start noop_starts[k], one copy's reset each (a
    vector env hands every copy the same options), and each return keeps its start."""
    games = {-1: [-5.0], 0: [1.0], 1: [2.0, 0.0], 2: [3.0, 0.0, 0.0], 3: [4.0]}
    env = NoopScriptedEnv(2, games)
    played = play(_act, env, 5, seed=0, noop_starts=[0, 1, 2, 3, 0])
    assert sorted(zip(played.noop_starts, played.returns)) == [
        (0, 1.0),
        (0, 1.0),
        (1, 2.0),
        (2, 3.0),
        (3, 4.0),
    ]
    assert sorted(played.lengths) == [3] * 5  # ScriptedEnv's fixed episode length
    # every game from its own reset (no game of the full reset's `games[-1]` is counted), one
    # copy at a time, the starts in order; 5 games on 2 copies: copy 0 plays 3, copy 1 plays 2
    assert [o["noop_start"] for o in env.options] == [0, 1, 2, 3, 0]
    assert all(o["reset_mask"].sum() == 1 for o in env.options)
    assert [int(np.flatnonzero(o["reset_mask"])[0]) for o in env.options[:2]] == [0, 1]
    with pytest.raises(ValueError, match="2 starts for 5 episodes"):
        play(_act, NoopScriptedEnv(2, games), 5, seed=0, noop_starts=[0, 1])


def test_a_stalled_game_restarts_from_the_next_start():
    games = {-1: [-5.0], 0: [0.0, 0.0, 0.0, 0.0, 1.0], 1: [2.0]}
    env = NoopScriptedEnv(1, games)
    played = play(_act, env, 2, seed=0, max_quiet=2, noop_starts=[0, 1])
    assert (played.returns, played.noop_starts, played.stalled) == ([0.0, 2.0], [0, 1], 1)


def test_a_random_policy_on_pong_gives_up_long_before_a_game_ends():
    from pixelrl import compose_config
    from pixelrl.envs import EVAL, make_vector_env

    cfg = compose_config(["env=Pong"])
    assert cfg.eval.max_return == 21  # env=Pong knows its best return
    env = make_vector_env(cfg.env, 4, mode=EVAL)
    rng = np.random.default_rng(0)
    try:
        gave_up = play(
            lambda obs: rng.integers(0, 6, len(obs)),
            env,
            4,
            seed=0,
            hopeless=Hopeless(18.0, float(cfg.eval.max_return)),
        )
    finally:
        env.close()
    # 4 games of at most 21 each: 12 points conceded in all end it (84 - 12 = 72 = 4 x 18);
    # several copies may concede on one step, so the bound lies just under 18
    assert isinstance(gave_up, GaveUp) and 18 - 4 / 4 <= gave_up.bound < 18
    assert gave_up.episodes == 0 and gave_up.steps < 800  # a random game lasts ~800 steps


def test_the_evaluator_that_chooses_select_pt_plays_its_own_setting_and_games(
    tmp_path, monkeypatch
):
    """eval.select_sticky_actions: past the solve, Run evaluates with an Evaluator at that
    setting whose games start from other seeds than those of the run's evaluations and of a
    later `mode=eval` (which reports the chosen policy on games it was not chosen on)."""
    from pixelrl import compose_config, evaluate

    seeds = []

    class Recorded(ScriptedEnv):
        def reset(self, seed=None):
            seeds.append(seed)
            return super().reset(seed)

    monkeypatch.setattr(evaluate, "make_vector_env", lambda *a, **k: Recorded([[[1.0]]]))
    cfg = compose_config(["env=Pong", "seed=3"])
    plain = evaluate.Evaluator(cfg, tmp_path)
    select = evaluate.Evaluator(cfg, tmp_path, sticky=0.25, seed_offset=evaluate.SELECT_SEED_OFFSET)
    assert (plain.env_cfg.sticky_actions, select.env_cfg.sticky_actions) == (0.0, 0.25)
    assert (
        plain.evaluate(_act, episodes=1)
        == select.evaluate(_act, episodes=1)
        == ([1.0], [3], 0, None)
    )
    assert seeds == [3 + evaluate.EVAL_SEED_OFFSET, 3 + evaluate.SELECT_SEED_OFFSET]
