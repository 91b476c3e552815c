"""Agents must actually learn: Catch in seconds, clearly above a random paddle (about -0.6)."""

import pytest

from .conftest import FAST, last_json_line, metrics

RANDOM_CATCH = -0.6


def final_eval(cli, tmp_path, *args) -> float:
    """Train with the CLI, return the final greedy evaluation (50 episodes)."""
    cli(
        *args,
        "env=Catch",
        "eval.every_frames=0",
        "eval.episodes=50",
        *FAST,
        "hydra.run.dir=run",
        check=True,
    )
    evals = [r for r in metrics(tmp_path / "run") if "eval/return_mean" in r]
    assert evals, "no evaluation was logged"
    return evals[-1]["eval/return_mean"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,threshold",
    [
        (["algo=actor_critic", "seed=1"], 0.5),
        (["algo=actor_critic", "seed=2"], 0.5),
        # half of Catch's 100k frames: seeds 1-8 of each scored 1.0 at 50k (2026-12-03, EPYC)
        (["algo=a3c", "algo.num_workers=2", "total_frames=50000"], 0.3),
        (["algo=a3c", "algo.num_workers=0", "total_frames=50000"], 0.3),
        # every choice of Psi must at least beat a random paddle clearly
        (["algo=actor_critic", "algo.psi=td"], RANDOM_CATCH + 0.6),
        (["algo=actor_critic", "algo.psi=q"], RANDOM_CATCH + 0.6),
        (["algo=actor_critic", "algo.psi=gae"], RANDOM_CATCH + 0.6),
        # rollouts reused under PPO's clipped surrogate: seeds 1-8 of each scored 1.0
        # (2026-12-04, AMX Xeon; the A3C case with num_workers 0 too), and A2C's at half of
        # Catch's frames too (2026-12-06, Xeon without AMX; at 50k the other A2C cases fell to
        # -0.08-0.44 on some seeds, so they keep 100k)
        (["algo=actor_critic", "algo.epochs=4", "total_frames=50000"], 0.5),
        (["algo=a3c", "algo.num_workers=2", "algo.epochs=3", "total_frames=50000"], 0.3),
        (["algo=reinforce", "seed=1", "total_frames=40000"], 0.3),
        (["algo=reinforce", "seed=2", "total_frames=40000"], 0.3),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_learns_catch(cli, tmp_path, args, threshold):
    assert final_eval(cli, tmp_path, *args) > threshold


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
