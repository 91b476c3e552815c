"""Learning curves, any logged metric, and speed plots from metrics.jsonl.

    python -m pixelrl.plot <run or multirun dirs>... [x=frames|minutes|episodes]
                           [y=return|running_reward|<metric>[,<metric>...]] [agg=mean|iqm]
                           [group=config|run] [out=FILE.png] [smooth=N|auto]

Every directory below the given paths that holds a metrics.jsonl is a run. Runs whose configs
differ only in `seed` form one group (group=run: every run on its own, labelled by its seed),
drawn as the mean of its runs with a ± std band, or with agg=iqm as the interquartile mean with a
95% bootstrap confidence band (rliable's aggregate for 3+ seeds). Labels name the algorithm and env
plus the keys that differ between groups.

y=return (default): the smoothed training episode return, evaluation returns as points, and a
second panel with training frames/s over wall-clock time. y=running_reward: the running reward
that REINFORCE logs (pg-pong's 0.99/0.01 average; unsmoothed). Any other y names metrics as they
appear in metrics.jsonl (`eval/return_mean`, `losses/saturated`, `train/fps`, ...): one panel
each, points joined by lines, smoothed only with smooth=N.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixelrl import tool_args
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
X_LABELS = {
    "frames": "emulator frames",
    "minutes": "wall-clock minutes",
    "episodes": "training episodes",
}
CURVES = ("return", "running_reward")  # the episode curves (with the speed panel)
AGGREGATES = ("mean", "iqm")
GROUPINGS = ("config", "run")
BOOTSTRAP_SAMPLES = 2000


@dataclass
class RunData:
    path: Path
    config: dict
    rows: list[dict]
    episodes: np.ndarray  # (n, 5): frames, minutes, episode number, return, running reward (or nan)
    evals: np.ndarray  # (m, 4): frames, minutes, episode number, eval return mean
    fps: np.ndarray  # (k, 2): minutes, frames/s

    def episode_number(self, frames: np.ndarray) -> np.ndarray:
        """The training episodes finished by each frame count."""
        if not len(self.episodes):
            return np.zeros(len(frames))
        count = np.searchsorted(self.episodes[:, 0], frames, side="right")
        return np.where(count > 0, self.episodes[np.maximum(count - 1, 0), 2], 0.0)

    def series(self, metric: str, x: str) -> tuple[np.ndarray, np.ndarray]:
        """(x, value) of every row that logged `metric`."""
        rows = [r for r in self.rows if r.get(metric) is not None]
        frames = np.asarray([r["frames"] for r in rows], np.float64)
        values = np.asarray([r[metric] for r in rows], np.float64)
        if x == "frames":
            return frames, values
        if x == "minutes":
            return np.asarray([r["time_s"] / 60 for r in rows], np.float64), values
        return self.episode_number(frames), values

    def metrics(self) -> set[str]:
        return {k for r in self.rows for k, v in r.items() if v is not None} - {"frames", "time_s"}


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
    fps = np.asarray(
        [(r["time_s"] / 60, r["train/fps"]) for r in rows if "train/fps" in r], np.float64
    ).reshape(-1, 2)
    run = RunData(run_dir, _load_config(run_dir), rows, episodes, np.zeros((0, 4)), fps)
    frames, means = run.series("eval/return_mean", "frames")
    minutes, _ = run.series("eval/return_mean", "minutes")
    run.evals = np.column_stack([frames, minutes, run.episode_number(frames), means]).reshape(-1, 4)
    return run


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def group_runs(runs: list[RunData], by: str = "config") -> list[Group]:
    flats = [
        {k: v for k, v in _flatten(run.config).items() if k.split(".")[0] not in IGNORED_KEYS}
        for run in runs
    ]
    # a key that only newer runs have (added to the schema since) and that has one value in all of
    # them is the value older runs ran with too (a new key's default keeps the old behaviour):
    # without this, runs before and after it would be told apart by `key=None`
    for k in {k for flat in flats for k in flat}:
        values = {repr(flat[k]) for flat in flats if k in flat}
        if len(values) == 1:
            value = next(flat[k] for flat in flats if k in flat)
            for flat in flats:
                flat.setdefault(k, value)
    groups: dict[str, Group] = {}
    for run, flat in zip(runs, flats, strict=True):
        key = repr(sorted(flat.items(), key=lambda kv: kv[0])) if flat else str(run.path)
        if by == "run":
            key = str(run.path)
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
        if by == "run":
            seed = g.runs[0].config.get("seed")
            if seed is not None:
                g.label += f" seed={seed}"
            elif base:  # a run without a config is already labelled by its dir's name
                g.label += f" {g.runs[0].path.name}"
        elif len(g.runs) > 1:
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


def iqm(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% (25% trimmed from each end, as rliable)."""
    from scipy.stats import trim_mean

    return trim_mean(values, 0.25, axis=axis)


def aggregate(ys: np.ndarray, agg: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(center, low, high) over runs (rows of ys): mean ± std, or the IQM with a 95% percentile
    bootstrap band over runs resampled with replacement."""
    if agg == "mean":
        mean, std = ys.mean(0), ys.std(0)
        return mean, mean - std, mean + std
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(ys), size=(BOOTSTRAP_SAMPLES, len(ys)))
    boot = iqm(ys[picks], axis=1)  # (samples, points)
    return iqm(ys, axis=0), np.percentile(boot, 2.5, axis=0), np.percentile(boot, 97.5, axis=0)


def group_curve(curves, agg: str = "mean", points: int = 200):
    """Common x grid and the aggregate over runs of (x, y) curves, where every run has data."""
    curves = [(cx, cy) for cx, cy in curves if len(cx)]
    if not curves:
        return None
    hi = min(c[0][-1] for c in curves)
    lo = max(c[0][0] for c in curves)
    if len(curves) == 1 or hi <= lo:
        cx, cy = curves[0]
        return cx, cy, cy, cy
    grid = np.linspace(lo, hi, points)
    ys = np.stack([np.interp(grid, cx, cy) for cx, cy in curves])
    return (grid, *aggregate(ys, agg))


def episode_curves(group: Group, x: str, window: int, y: str):
    """Each run's smoothed episode returns (or running reward, already an average)."""
    col = {"frames": 0, "minutes": 1, "episodes": 2}[x]
    ycol = 3 if y == "return" else 4
    window = 1 if y == "running_reward" else window
    return [
        (r.episodes[:, col], smooth(r.episodes[:, ycol], window))
        for r in group.runs
        if len(r.episodes) and not np.isnan(r.episodes[:, ycol]).all()
    ]


def auto_window(runs: list[RunData]) -> int:
    """Smooth over ~2% of the shortest run's episodes (at least 10)."""
    counts = [len(r.episodes) for r in runs if len(r.episodes)]
    return max(10, min(counts) // 50) if counts else 10


def _check(runs: list[RunData], x: str, ys: list[str], agg: str, group: str) -> None:
    for key, value, allowed in (
        ("x", x, X_LABELS),
        ("agg", agg, AGGREGATES),
        ("group", group, GROUPINGS),
    ):
        if value not in allowed:
            raise ValueError(f"{key}={value!r} is not allowed; choose one of: {', '.join(allowed)}")
    logged = set().union(*(r.metrics() for r in runs))
    for y in ys:
        have = (
            "train/episode_return"
            if y == "return"
            else "train/running_reward"
            if y == "running_reward"
            else y
        )
        if have not in logged:
            hint = ", ".join(sorted(m for m in logged if "/" in m)[:12])
            raise ValueError(f"y={y!r}: no run logged it; metrics in these runs: {hint}")


def make_figure(
    paths: list[str | Path],
    x: str = "frames",
    smooth_window: int | None = None,
    y: str = "return",
    agg: str = "mean",
    group: str = "config",
):
    """The figure and the groups it shows. smooth_window=None: automatic for episode returns,
    none for other metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [load_run(p) for p in find_runs(paths)]
    if not runs:
        raise FileNotFoundError("no runs found (no metrics.jsonl under the given paths)")
    ys = [m for m in y.split(",") if m]
    _check(runs, x, ys, agg, group)
    groups = group_runs(runs, group)
    if agg == "iqm":
        few = [g for g in groups if len(g.runs) < 3]
        if few:
            raise ValueError(
                f"agg=iqm needs 3+ runs per group; {few[0].label!r} has {len(few[0].runs)}"
            )
    episodic = len(ys) == 1 and ys[0] in CURVES
    window = smooth_window or (auto_window(runs) if episodic else 1)
    if episodic:
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [2, 1]})
    else:
        fig, axes = plt.subplots(1, len(ys), figsize=(6.5 * len(ys), 4.8), squeeze=False)
        axes = list(axes[0])
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, g in enumerate(groups):
        color = colors[i % len(colors)]
        if episodic:
            _draw(axes[0], group_curve(episode_curves(g, x, window, ys[0]), agg), color, g, agg)
            _draw_evals(axes[0], g, x, color)
            for j, r in enumerate(g.runs):
                if len(r.fps):
                    label = g.label if j == 0 else None
                    axes[1].plot(
                        r.fps[:, 0], r.fps[:, 1], color=color, alpha=0.8, lw=1, label=label
                    )
            continue
        for ax, metric in zip(axes, ys):
            curves = [r.series(metric, x) for r in g.runs]
            curves = [(cx, smooth(cy, window)) for cx, cy in curves]
            _draw(ax, group_curve(curves, agg), color, g, agg, marker=len(g.runs) == 1)
    for ax, metric in zip(axes, ys):
        ax.set_xlabel(X_LABELS[x])
        ax.set_title(metric if not episodic else "learning curves")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        if not episodic:
            how = {"mean": "mean ± std", "iqm": "IQM, 95% bootstrap band"}[agg]
            ax.set_ylabel(f"{metric} ({how} over a group's runs)")
    if episodic:
        band = "" if agg == "mean" else " (IQM)"
        if ys[0] == "running_reward":
            axes[0].set_ylabel(
                f"running reward (0.99 average of episode returns){band}; dots: eval"
            )
        else:
            axes[0].set_ylabel(f"episode return (smoothed over {window}){band}; dots: eval")
        axes[1].set_xlabel("wall-clock minutes")
        axes[1].set_ylabel("training frames/s")
        axes[1].set_title("speed")
        axes[1].grid(alpha=0.3)
        axes[1].ticklabel_format(axis="x", useOffset=False)
    fig.tight_layout()
    return fig, groups


def _draw(ax, curve, color, group: Group, agg: str, marker: bool = False) -> None:
    if curve is None:
        return
    gx, center, low, high = curve
    ax.plot(gx, center, color=color, label=group.label, marker="o" if marker else None, ms=3)
    if len(group.runs) > 1:
        ax.fill_between(gx, low, high, color=color, alpha=0.2, linewidth=0)


def _draw_evals(ax, group: Group, x: str, color) -> None:
    evals = [r.evals for r in group.runs if len(r.evals)]
    if not evals:
        return
    ev = np.concatenate(evals)
    col = {"frames": 0, "minutes": 1, "episodes": 2}[x]
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0 if argv else 2
    defaults = {
        "x": "frames",
        "y": "return",
        "agg": "mean",
        "group": "config",
        "out": "curves.png",
        "smooth": "auto",
    }
    try:
        opts, paths = tool_args.parse(argv, defaults, paths=True)
        window = None if opts["smooth"] == "auto" else tool_args.number(opts, "smooth", int, 1)
        fig, groups = make_figure(paths, opts["x"], window, opts["y"], opts["agg"], opts["group"])
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
