"""Agents must actually learn: Catch in seconds, clearly above a random paddle (about -0.6)."""

import pytest

from .conftest import FAST, last_json_line, metrics

RANDOM_CATCH = -0.6


def _final_eval(run_dir):
    evals = [r for r in metrics(run_dir) if "eval/return_mean" in r]
    assert evals, "no evaluation was logged"
    return evals[-1]["eval/return_mean"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_actor_critic_learns_catch(cli, tmp_path, seed):
    cli(
        "algo=actor_critic",
        "env=Catch",
        f"seed={seed}",
        "eval.every_frames=0",
        "eval.episodes=50",
        *FAST,
        "hydra.run.dir=run",
        check=True,
    )
    assert _final_eval(tmp_path / "run") > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("workers", [2, 0])
def test_a3c_learns_catch(cli, tmp_path, workers):
    cli(
        "algo=a3c",
        "env=Catch",
        f"algo.num_workers={workers}",
        "eval.every_frames=0",
        "eval.episodes=50",
        *FAST,
        "hydra.run.dir=run",
        check=True,
    )
    assert _final_eval(tmp_path / "run") > 0.3


@pytest.mark.slow
@pytest.mark.parametrize("psi", ["td", "q", "gae"])
def test_actor_critic_psi_choices_learn_catch(cli, tmp_path, psi):
    cli(
        "algo=actor_critic",
        "env=Catch",
        f"algo.psi={psi}",
        "eval.every_frames=0",
        "eval.episodes=50",
        *FAST,
        "hydra.run.dir=run",
        check=True,
    )
    # every choice of Psi must at least beat a random paddle clearly
    assert _final_eval(tmp_path / "run") > RANDOM_CATCH + 0.6


def test_eval_of_an_untrained_agent_is_near_random(cli, tmp_path):
    cli(
        "algo=actor_critic",
        "env=Catch",
        "total_frames=160",
        "eval.every_frames=0",
        "eval.final=false",
        *FAST,
        "hydra.run.dir=run",
        check=True,
    )
    proc = cli("mode=eval", "load=run", "eval.episodes=100", *FAST, "hydra.run.dir=ev", check=True)
    assert last_json_line(proc.stdout)["return_mean"] < 0.0
