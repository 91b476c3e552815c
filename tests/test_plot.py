"""python -m pixelrl.plot on synthetic runs: 2 configs x 2 seeds -> 2 lines with bands."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from pixelrl.plot import aggregate, find_runs, group_runs, iqm, load_run, make_figure, smooth


def fake_run(path, lr, seed, slope):
    path.mkdir(parents=True)
    (path / ".hydra").mkdir()
    cfg = {
        "seed": seed,
        "algo": {"name": "a3c", "lr": lr},
        "env": {"name": "Pong"},
        "logger": {"x": seed},
    }
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    rng = np.random.default_rng(seed)
    with open(path / "metrics.jsonl", "w") as f:
        for i in range(100):
            frames = (i + 1) * 1000
            f.write(
                json.dumps(
                    {
                        "frames": frames,
                        "time_s": i * 3.0,
                        "train/episode_return": slope * i + rng.normal(),
                    }
                )
                + "\n"
            )
            if i % 10 == 0:
                f.write(
                    json.dumps({"frames": frames, "time_s": i * 3.0, "train/fps": 300 + i}) + "\n"
                )
            if i % 25 == 0:
                f.write(
                    json.dumps(
                        {
                            "frames": frames,
                            "time_s": i * 3.0,
                            "eval/return_mean": slope * i,
                            "eval/return_std": 0.1,
                        }
                    )
                    + "\n"
                )
        f.write('{"frames": 1')  # a torn last line (killed run) must be skipped


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "multirun"
    for j, (lr, seed) in enumerate([(1e-4, 1), (1e-4, 2), (3e-4, 1), (3e-4, 2)]):
        fake_run(root / f"{j}_lr={lr},seed={seed}", lr, seed, slope=0.1 if lr == 1e-4 else 0.2)
    return root


def test_groups_by_config_ignoring_seed(sweep):
    groups = group_runs([load_run(p) for p in find_runs([sweep])])
    assert len(groups) == 2 and all(len(g.runs) == 2 for g in groups)
    labels = sorted(g.label for g in groups)
    assert labels[0].startswith("a3c Pong lr=0.0001") and "(2 seeds)" in labels[0]


def test_a_key_added_since_older_runs_does_not_split_them(tmp_path):
    """Runs made before a key existed group with runs that have its (one) value, and no label
    says `key=None`; a key with two values still tells its runs apart."""
    for j, seed in enumerate([1, 2, 3]):
        fake_run(tmp_path / f"r{j}", 1e-4, seed, slope=0.1)
    for j in (1, 2):  # newer runs: model.activation exists, with one value
        path = tmp_path / f"r{j}" / ".hydra" / "config.yaml"
        cfg = yaml.safe_load(path.read_text())
        path.write_text(yaml.safe_dump({**cfg, "model": {"activation": "relu"}}))
    runs = [load_run(tmp_path / f"r{j}") for j in range(3)]
    (group,) = group_runs(runs)
    assert len(group.runs) == 3 and "None" not in group.label and "activation" not in group.label
    assert all("None" not in g.label for g in group_runs(runs, by="run"))

    path = tmp_path / "r2" / ".hydra" / "config.yaml"
    path.write_text(path.read_text().replace("activation: relu", "activation: elu"))
    labels = sorted(g.label for g in group_runs([load_run(tmp_path / f"r{j}") for j in range(3)]))
    assert labels == [
        "a3c Pong model.activation=None",
        "a3c Pong model.activation=elu",
        "a3c Pong model.activation=relu",
    ]


@pytest.mark.parametrize("x", ["frames", "minutes", "episodes"])
def test_figure_has_one_line_and_band_per_config(sweep, x):
    fig, groups = make_figure([sweep], x=x)
    ax, ax_fps = fig.axes
    assert len(ax.get_lines()) == 2  # one mean line per config
    assert len(ax.collections) == 4  # 2 std bands + 2 eval scatters
    assert len(ax_fps.get_lines()) == 4  # fps of every run
    assert sorted(line.get_label() for line in ax.get_lines()) == sorted(g.label for g in groups)
    steeper = max(ax.get_lines(), key=lambda line: line.get_ydata()[-1])
    assert "lr=0.0003" in steeper.get_label()
    xmax = max(line.get_xdata()[-1] for line in ax.get_lines())
    assert xmax == pytest.approx({"frames": 100_000, "minutes": 99 * 3 / 60, "episodes": 100}[x])


def test_running_reward_against_episodes(tmp_path):
    """REINFORCE's running reward, unsmoothed, against its own episode counter (which a resumed
    run continues); evaluations sit at the episode count reached by their frame count."""
    run = tmp_path / "run"
    run.mkdir()
    rows, running = [], -21.0
    for i in range(50):
        running = 0.99 * running + 0.01 * (-21.0 + i * 0.5)
        rows.append(
            {
                "frames": 1000 * (i + 1),
                "time_s": float(i),
                "train/episode_return": -21.0 + i * 0.5,
                "train/running_reward": running,
                "train/episodes": 1000 + i + 1,
            }
        )
    rows.insert(21, {"frames": 20_500, "time_s": 20.5, "eval/return_mean": -10.0})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fig, _ = make_figure([run], x="episodes", y="running_reward")
    ax = fig.axes[0]
    (line,) = ax.get_lines()
    assert line.get_xdata()[0] == 1001 and line.get_xdata()[-1] == 1050
    assert line.get_ydata()[-1] == pytest.approx(running)  # not smoothed again
    assert ax.collections[0].get_offsets()[0].tolist() == [1020, -10.0]
    assert "running reward" in ax.get_ylabel()
    with pytest.raises(ValueError, match="y='loss': no run logged it; metrics in these runs: eval"):
        make_figure([run], y="loss")


def test_smooth_is_a_trailing_mean():
    assert np.allclose(smooth(np.array([1.0, 3.0, 5.0, 7.0]), 2), [1.0, 2.0, 4.0, 6.0])


def test_cli_writes_png(sweep, tmp_path):
    out = tmp_path / "curves.png"
    proc = subprocess.run(
        [sys.executable, "-m", "pixelrl.plot", str(sweep), "x=minutes", f"out={out}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "2 configuration(s), 4 run(s)" in proc.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "pixelrl.plot", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "not a run directory" in bad.stderr


def test_keys_added_later_take_their_default(tmp_path):
    """A run made before algo.pre_tanh_l2 existed ran with its default (0.0): it groups with a
    later run that has pre_tanh_l2=0.0 and is labelled with that value, not None."""
    runs = []
    for name, extra, seed in [
        ("old", {}, 1),
        ("new", {"pre_tanh_l2": 0.0}, 2),
        ("pen", {"pre_tanh_l2": 1e-3}, 1),
    ]:
        fake_run(tmp_path / name, 1e-4, seed, slope=0.1)
        cfg_file = tmp_path / name / ".hydra" / "config.yaml"
        cfg = yaml.safe_load(cfg_file.read_text())
        cfg["algo"] = {"name": "ddpg", "lr": 1e-4, **extra}
        cfg_file.write_text(yaml.safe_dump(cfg))
        runs.append(load_run(tmp_path / name))
    groups = group_runs(runs)
    assert sorted(len(g.runs) for g in groups) == [1, 2]
    labels = sorted(g.label for g in groups)
    assert labels == ["ddpg Pong pre_tanh_l2=0.0 (2 seeds)", "ddpg Pong pre_tanh_l2=0.001"]


def test_any_metric_one_panel_each(sweep):
    fig, groups = make_figure([sweep], x="frames", y="eval/return_mean,train/fps")
    assert [ax.get_title() for ax in fig.axes] == ["eval/return_mean", "train/fps"]
    ev, fps = fig.axes
    assert len(ev.get_lines()) == 2 and len(ev.collections) == 2  # a mean line + band per config
    steeper = max(ev.get_lines(), key=lambda line: line.get_ydata()[-1])
    assert "lr=0.0003" in steeper.get_label()
    # eval/return_mean is logged at frames 1k, 26k, 51k, 76k: the last point is slope * 75
    assert steeper.get_ydata()[-1] == pytest.approx(0.2 * 75)
    assert max(fps.get_lines()[0].get_ydata()) == pytest.approx(300 + 90)


def test_group_run_draws_every_seed_on_its_own(sweep):
    fig, groups = make_figure([sweep], y="eval/return_mean", group="run")
    assert len(groups) == 4 and len(fig.axes[0].get_lines()) == 4
    assert sorted(g.label.split()[-1] for g in groups) == ["seed=1", "seed=1", "seed=2", "seed=2"]
    assert not fig.axes[0].collections  # no band around a single run


def test_iqm_band_and_its_need_for_three_runs(sweep, tmp_path):
    # the interquartile mean drops the outer quarter on each side: an outlier run moves it little
    ys = np.array([[0.0], [1.0], [2.0], [3.0], [100.0]])
    assert iqm(ys)[0] == pytest.approx(2.0)
    center, low, high = aggregate(ys, "iqm")
    assert low[0] <= center[0] <= high[0] and high[0] < 100
    mean, lo, hi = aggregate(ys, "mean")
    assert mean[0] == pytest.approx(21.2) and hi[0] - mean[0] == pytest.approx(ys.std())
    with pytest.raises(ValueError, match="agg=iqm needs 3\\+ runs per group"):
        make_figure([sweep], agg="iqm")
    for seed in (3, 4, 5):  # three seeds of one config
        fake_run(tmp_path / "three" / f"s{seed}", 1e-4, seed, slope=0.1)
    fig, groups = make_figure([tmp_path / "three"], agg="iqm", y="eval/return_mean")
    assert len(groups) == 1 and len(groups[0].runs) == 3
    assert len(fig.axes[0].collections) == 1  # the bootstrap band


def test_unknown_metric_or_option_is_one_line(sweep):
    proc = subprocess.run(
        [sys.executable, "-m", "pixelrl.plot", str(sweep), "y=losses/nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "y='losses/nope': no run logged it" in proc.stderr


def test_job_dirs_with_equals_signs_are_paths_not_options(sweep, tmp_path, capsys):
    from pixelrl import plot

    jobs = sorted(str(p) for p in sweep.iterdir())[:2]  # "0_lr=0.0001,seed=1", ...
    assert plot.main([*jobs, f"out={tmp_path / 'two.png'}"]) == 0
    assert "1 configuration(s), 2 run(s)" in capsys.readouterr().out
    assert plot.main([str(tmp_path / "no=such_run")]) == 2  # neither a path nor an option


def test_a_run_without_a_config_is_labelled_by_its_dir_once(tmp_path):
    """metrics.jsonl copied on its own (from another machine, say): its dir names it, once."""
    for name in ("gpu_seed_1", "cpu_seed_1"):
        (tmp_path / name).mkdir()
        rows = [
            {"frames": 1000 * i, "time_s": i, "train/episode_return": float(i)} for i in range(5)
        ]
        (tmp_path / name / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    runs = [load_run(tmp_path / name) for name in ("gpu_seed_1", "cpu_seed_1")]
    assert sorted(g.label for g in group_runs(runs, by="run")) == ["cpu_seed_1", "gpu_seed_1"]
