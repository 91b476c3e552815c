"""Learning curves and speed plots from metrics.jsonl.

    python -m pixelrl.plot <run or multirun dirs>... [x=frames|minutes|episodes]
                           [y=return|running_reward] [out=FILE.png] [smooth=N|auto]

Every directory below the given paths that holds a metrics.jsonl is a run. Runs whose configs
differ only in `seed` form one group, drawn as the mean of their smoothed episode returns with a
± std band; evaluation returns are drawn as points. Labels name the algorithm and env plus the
keys that differ between groups. A second panel shows training frames/s over wall-clock time.
y=running_reward draws the running reward that REINFORCE logs (pg-pong's 0.99/0.01 average;
unsmoothed) instead of the episode return.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixelrl.tracking import read_metrics

# Keys that never distinguish configurations (plumbing, not hyperparameters).
IGNORED_KEYS = (
    "seed",
    "resume",
    "load",
    "mode",
    "device",
    "logger",
    "eval",
    "video",
    "checkpoint",
    "torch_threads",
)


@dataclass
class RunData:
    path: Path
    config: dict
    episodes: np.ndarray  # (n, 5): frames, minutes, episode number, return, running reward (or nan)
    evals: np.ndarray  # (m, 4): frames, minutes, episode number, eval return mean
    fps: np.ndarray  # (k, 2): minutes, frames/s


@dataclass
class Group:
    key: str
    config: dict
    runs: list[RunData] = field(default_factory=list)
    label: str = ""


def find_runs(paths: list[str | Path]) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "metrics.jsonl").is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(m.parent for m in p.rglob("metrics.jsonl")))
        else:
            raise FileNotFoundError(
                f"{p}: not a run directory (no metrics.jsonl) or a directory of runs"
            )
    return list(dict.fromkeys(found))


def _load_config(run_dir: Path) -> dict:
    from omegaconf import OmegaConf

    from pixelrl.config import ALGO_SCHEMAS

    cfg_file = run_dir / ".hydra" / "config.yaml"
    if not cfg_file.is_file():
        return {}
    cfg = OmegaConf.to_container(OmegaConf.load(cfg_file), resolve=False)
    # a run made before an algo key existed ran with that key's default: fill it in, so the run
    # groups with later runs of the same settings and its label shows the value it ran with
    algo = cfg.get("algo")
    if isinstance(algo, dict) and algo.get("name") in ALGO_SCHEMAS:
        schema = OmegaConf.structured(ALGO_SCHEMAS[algo["name"]])
        defaults = OmegaConf.to_container(schema, resolve=False, throw_on_missing=False)
        cfg["algo"] = {**defaults, **algo}
    return cfg


def load_run(run_dir: Path) -> RunData:
    rows = read_metrics(run_dir / "metrics.jsonl")
    eps = [
        (
            r["frames"],
            r["time_s"] / 60,
            r.get("train/episodes", i + 1),
            r["train/episode_return"],
            r.get("train/running_reward", np.nan),
        )
        for i, r in enumerate(r for r in rows if "train/episode_return" in r)
    ]
    episodes = np.asarray(eps, np.float64).reshape(-1, 5)
    evs = [
        (r["frames"], r["time_s"] / 60, r["eval/return_mean"])
        for r in rows
        if r.get("eval/return_mean") is not None
    ]
    evals = np.asarray(evs, np.float64).reshape(-1, 3)
    # an evaluation's episode number: the training episodes finished by its frame count
    numbers = np.zeros(len(evals))
    if len(episodes):
        count = np.searchsorted(episodes[:, 0], evals[:, 0], side="right")
        numbers = np.where(count > 0, episodes[np.maximum(count - 1, 0), 2], 0.0)
    evals = np.column_stack([evals[:, :2], numbers, evals[:, 2]]).reshape(-1, 4)
    fps = np.asarray(
        [(r["time_s"] / 60, r["train/fps"]) for r in rows if "train/fps" in r], np.float64
    ).reshape(-1, 2)
    return RunData(run_dir, _load_config(run_dir), episodes, evals, fps)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def group_runs(runs: list[RunData]) -> list[Group]:
    groups: dict[str, Group] = {}
    for run in runs:
        flat = {
            k: v for k, v in _flatten(run.config).items() if k.split(".")[0] not in IGNORED_KEYS
        }
        key = repr(sorted(flat.items(), key=lambda kv: kv[0])) if flat else str(run.path)
        groups.setdefault(key, Group(key, flat)).runs.append(run)
    out = list(groups.values())
    # label: algo/env, then the keys whose values differ across groups
    all_keys = sorted({k for g in out for k in g.config})
    differing = [k for k in all_keys if len({repr(g.config.get(k)) for g in out}) > 1]
    for g in out:
        base = " ".join(str(g.config[k]) for k in ("algo.name", "env.name") if k in g.config)
        extra = [
            f"{k.split('.', 1)[-1] if k.startswith('algo.') else k}={g.config.get(k)}"
            for k in differing
            if k not in ("algo.name", "env.name")
        ]
        g.label = " ".join([base or g.runs[0].path.name, *extra]).strip()
        if len(g.runs) > 1:
            g.label += f" ({len(g.runs)} seeds)"
    return out


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (the first points average what exists so far)."""
    if len(values) == 0 or window <= 1:
        return values
    c = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


X_COLUMNS = {"frames": 0, "minutes": 1, "episodes": 2}
X_LABELS = {
    "frames": "emulator frames",
    "minutes": "wall-clock minutes",
    "episodes": "training episodes",
}
Y_COLUMNS = {"return": 3, "running_reward": 4}


def group_curve(group: Group, x: str, window: int, points: int = 200, y: str = "return"):
    """Common x grid and the mean / std over seeds of the smoothed episode returns (or of the
    running reward, which is already an average and is not smoothed again)."""
    col, ycol = X_COLUMNS[x], Y_COLUMNS[y]
    if y == "running_reward":
        window = 1
    curves = [
        (r.episodes[:, col], smooth(r.episodes[:, ycol], window))
        for r in group.runs
        if len(r.episodes) and not np.isnan(r.episodes[:, ycol]).all()
    ]
    if not curves:
        return None
    hi = min(c[0][-1] for c in curves)  # only where every seed has data
    lo = max(c[0][0] for c in curves)
    if hi <= lo:
        xs_single, ys_single = curves[0]
        return xs_single, ys_single, np.zeros_like(ys_single)
    grid = np.linspace(lo, hi, points)
    ys = np.stack([np.interp(grid, cx, cy) for cx, cy in curves])
    return grid, ys.mean(0), ys.std(0)


def auto_window(runs: list[RunData]) -> int:
    """Smooth over ~2% of the shortest run's episodes (at least 10)."""
    counts = [len(r.episodes) for r in runs if len(r.episodes)]
    return max(10, min(counts) // 50) if counts else 10


def make_figure(
    paths: list[str | Path],
    x: str = "frames",
    smooth_window: int | None = None,
    y: str = "return",
):
    """The figure (learning curves | frames/s) and the groups it shows. smooth_window=None: auto."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x not in X_COLUMNS:
        raise ValueError(f"x={x!r} is not allowed; choose one of: {', '.join(X_COLUMNS)}")
    if y not in Y_COLUMNS:
        raise ValueError(f"y={y!r} is not allowed; choose one of: {', '.join(Y_COLUMNS)}")
    runs = [load_run(p) for p in find_runs(paths)]
    if not runs:
        raise FileNotFoundError("no runs found (no metrics.jsonl under the given paths)")
    groups = group_runs(runs)
    smooth_window = smooth_window or auto_window(runs)
    fig, (ax, ax_fps) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [2, 1]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    col = X_COLUMNS[x]
    for i, g in enumerate(groups):
        color = colors[i % len(colors)]
        curve = group_curve(g, x, smooth_window, y=y)
        if curve is not None:
            gx, mean, std = curve
            ax.plot(gx, mean, color=color, label=g.label)
            if len(g.runs) > 1:
                ax.fill_between(gx, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
        evals = [r.evals for r in g.runs if len(r.evals)]
        if evals:
            ev = np.concatenate(evals)
            ax.scatter(
                ev[:, col],
                ev[:, 3],
                color=color,
                s=14,
                marker="o",
                edgecolors="black",
                linewidths=0.4,
                zorder=3,
            )
        for j, r in enumerate(g.runs):
            if len(r.fps):
                ax_fps.plot(
                    r.fps[:, 0],
                    r.fps[:, 1],
                    color=color,
                    alpha=0.8,
                    linewidth=1,
                    label=g.label if j == 0 else None,
                )
    ax.set_xlabel(X_LABELS[x])
    if y == "running_reward":
        ax.set_ylabel("running reward (0.99 average of episode returns); dots: eval")
    else:
        ax.set_ylabel(f"episode return (smoothed over {smooth_window}); dots: eval")
    ax.set_title("learning curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax_fps.set_xlabel("wall-clock minutes")
    ax_fps.set_ylabel("training frames/s")
    ax_fps.set_title("speed")
    ax_fps.grid(alpha=0.3)
    ax_fps.ticklabel_format(axis="x", useOffset=False)
    fig.tight_layout()
    return fig, groups


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0 if argv else 2
    opts = {"x": "frames", "y": "return", "out": "curves.png", "smooth": "auto"}
    paths = []
    for a in argv:
        key, sep, value = a.partition("=")
        if sep and key in opts:
            opts[key] = value
        elif sep:
            print(
                f"pixelrl.plot: error: unknown option {key!r}; use x=, y=, out=, smooth=",
                file=sys.stderr,
            )
            return 2
        else:
            paths.append(a)
    try:
        window = None if opts["smooth"] == "auto" else int(opts["smooth"])
        fig, groups = make_figure(paths, opts["x"], window, opts["y"])
    except (FileNotFoundError, ValueError) as e:
        print(f"pixelrl.plot: error: {e}", file=sys.stderr)
        return 2
    out = Path(opts["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"{out}: {len(groups)} configuration(s), {sum(len(g.runs) for g in groups)} run(s)")
    for g in groups:
        print(f"  {g.label}: {', '.join(str(r.path) for r in g.runs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
