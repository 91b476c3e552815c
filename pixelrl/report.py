"""A page to look at a run or a whole sweep: `python -m pixelrl.report PATH... [out=FILE.html]`.

    python -m pixelrl.report runs/2026-12-01/16-00-00-123456_a3c_Pong_s1
    python -m pixelrl.report multirun/catch_psi            # every run below: a sweep page

It writes one HTML file (default: report.html in the one given directory, or here) that needs no
server, no network and no script from anywhere else; it opens from disk in Chromium or Firefox.

A sweep gets a table with one row per job (the keys that differ, final and best evaluation, frames
and minutes to eval.target_return, frames/s), sortable by clicking a column; the seeds of each
configuration grouped with their mean and spread; the curves of all groups on one plot; and the
best video of each group side by side. Then every run: its command and overrides, the machine and
commit it ran on, its evaluations, best and last returns, its curves and every video it recorded.

Curves are embedded PNGs. Videos are linked by relative path (zip the folder to send it), or
embedded when small; each mp4 gets a VP9/WebM copy beside it, which open-source Chromium and
Firefox builds both play (their H.264 support depends on the system's codecs).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pixelrl import plot, tool_args
from pixelrl.errors import ConfigError

EMBED_BYTES = 1 << 20  # videos up to this size go inside the page
SORT_SCRIPT = """
function sortTable(th) {
  const table = th.closest("table"), body = table.tBodies[0];
  const col = Array.from(th.parentNode.children).indexOf(th);
  const up = th.dataset.order !== "asc";
  th.dataset.order = up ? "asc" : "desc";
  const key = td => { const v = td.dataset.v ?? td.textContent; const n = parseFloat(v);
                      return isNaN(n) ? v : n; };
  Array.from(body.rows)
    .sort((a, b) => { const x = key(a.cells[col]), y = key(b.cells[col]);
                      return (x > y ? 1 : x < y ? -1 : 0) * (up ? 1 : -1); })
    .forEach(row => body.appendChild(row));
}
"""
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 1300px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; cursor: pointer; } td.l, th.l { text-align: left; }
img { max-width: 100%; }
video { width: 320px; max-height: 260px; margin: 4px; background: #000; object-fit: contain; }
.videos { display: flex; flex-wrap: wrap; gap: 8px; } .videos figure { margin: 0; }
code, pre { background: #f6f6f6; padding: 2px 4px; } pre { white-space: pre-wrap; }
section.run { border-top: 2px solid #ddd; margin-top: 2em; }
"""


def _esc(x) -> str:
    return html.escape(str(x))


def _num(x, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:,.{digits}f}"


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return f'<img alt="curves" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def webm_copy(mp4: Path) -> Path | None:
    """A VP9/WebM copy of an mp4 beside it (made once), for browsers without H.264."""
    webm = mp4.with_suffix(".webm")
    if webm.is_file() and webm.stat().st_mtime >= mp4.stat().st_mtime:
        return webm
    import imageio_ffmpeg

    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-y",
        "-loglevel",
        "error",
        "-i",
        str(mp4),
        "-c:v",
        "libvpx-vp9",
        "-b:v",
        "0",
        "-crf",
        "40",
        "-row-mt",
        "1",
        "-an",
        str(webm),
    ]
    done = subprocess.run(cmd, capture_output=True, timeout=600)
    return webm if done.returncode == 0 and webm.is_file() else None


def _video(mp4: Path, page_dir: Path, caption: str) -> str:
    sources = []
    for path, kind in ((webm_copy(mp4), "video/webm"), (mp4, "video/mp4")):
        if path is None:
            continue
        if path.stat().st_size <= EMBED_BYTES:
            src = f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()}"
        else:
            src = Path(os.path.relpath(path, page_dir)).as_posix()
        sources.append(f'<source src="{_esc(src)}" type="{kind}">')
    return (
        f'<figure><video controls preload="auto" muted>{"".join(sources)}</video>'
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
    )


class RunSummary:
    """What the page shows of one run, read from its run dir."""

    def __init__(self, data: plot.RunData):
        self.data, self.path = data, data.path
        rows = data.rows
        self.evals = [r for r in rows if r.get("eval/return_mean") is not None]
        solved = next((r for r in rows if "eval/target_minutes" in r), None)
        self.target = (
            (solved["eval/target_frames"], solved["eval/target_minutes"]) if solved else None
        )
        self.final = self.evals[-1]["eval/return_mean"] if self.evals else None
        self.best = max((r["eval/return_mean"] for r in self.evals), default=None)
        returns = data.episodes[-20:, 3] if len(data.episodes) else np.zeros(0)
        self.last_train = float(returns.mean()) if len(returns) else None
        self.frames = rows[-1]["frames"] if rows else 0
        self.minutes = rows[-1]["time_s"] / 60 if rows else 0.0
        self.fps = float(np.median(data.fps[:, 1])) if len(data.fps) else None
        self.videos = sorted((self.path / "videos").glob("*.mp4"))
        self.seed = data.config.get("seed")

    def best_video(self) -> Path | None:
        """The video of the best evaluation (else the last one recorded)."""
        if self.best is not None:
            frames = next(r["frames"] for r in self.evals if r["eval/return_mean"] == self.best)
            match = self.path / "videos" / f"eval_{frames:011d}.mp4"
            if match.is_file():
                return match
        return self.videos[-1] if self.videos else None

    def command(self) -> tuple[list[str], list[dict]]:
        overrides = []
        hydra = self.path / ".hydra"
        for f in [hydra / "overrides.yaml", *sorted(hydra.glob("resume-*-overrides.yaml"))]:
            if f.is_file():
                import yaml

                overrides.append(f"{f.name}: {' '.join(yaml.safe_load(f.read_text()) or [])}")
        info = self.path / "run_info.json"
        sessions = json.loads(info.read_text()).get("sessions", []) if info.is_file() else []
        return overrides, sessions


def _sweep_section(summaries: list[RunSummary], groups: list[plot.Group], page_dir: Path) -> str:
    keys = sorted(
        {k for g in groups for k in g.config if len({repr(h.config.get(k)) for h in groups}) > 1}
    )
    head = [
        "run",
        *keys,
        "seed",
        "final eval",
        "best eval",
        "frames to target",
        "minutes to target",
        "frames/s",
        "frames",
    ]
    out = [
        "<h2>Sweep</h2>",
        f"<p>{len(summaries)} runs, {len(groups)} configurations. Click a column to sort.</p>",
        "<table id='runs'><thead><tr>",
    ]
    out += [
        f"<th class='{'l' if i == 0 else ''}' onclick='sortTable(this)'>{_esc(h)}</th>"
        for i, h in enumerate(head)
    ]
    out.append("</tr></thead><tbody>")
    by_path = {s.path: s for s in summaries}
    for g in groups:
        for r in g.runs:
            s = by_path[r.path]
            rel = _run_name(s.path, page_dir)
            cells = [f"<td class='l'><a href='#{_esc(rel)}'>{_esc(rel)}</a></td>"]
            cells += [f"<td class='l'>{_esc(g.config.get(k))}</td>" for k in keys]
            values = [
                s.seed,
                s.final,
                s.best,
                s.target[0] if s.target else None,
                s.target[1] if s.target else None,
                s.fps,
                s.frames,
            ]
            for v in values:
                sort = "" if v is None else f" data-v='{v}'"
                cells.append(
                    f"<td{sort}>{_num(v, 2) if isinstance(v, float) else _esc('–' if v is None else f'{v:,}')}</td>"
                )
            out.append(f"<tr>{''.join(cells)}</tr>")
    out.append(
        "</tbody></table><h3>Configurations (seeds grouped)</h3><table id='groups'><thead><tr>"
    )
    out += [
        f"<th onclick='sortTable(this)' class='{c}'>{h}</th>"
        for h, c in (
            ("configuration", "l"),
            ("runs", ""),
            ("final eval mean", ""),
            ("± std", ""),
            ("best eval mean", ""),
            ("solved", ""),
        )
    ]
    out.append("</tr></thead><tbody>")
    for g in groups:
        ss = [by_path[r.path] for r in g.runs]
        finals = [s.final for s in ss if s.final is not None]
        bests = [s.best for s in ss if s.best is not None]
        mean = float(np.mean(finals)) if finals else None
        std = float(np.std(finals)) if finals else None
        best = float(np.mean(bests)) if bests else None
        solved = sum(s.target is not None for s in ss)
        out.append(
            f"<tr><td class='l'>{_esc(g.label)}</td><td>{len(ss)}</td><td>{_num(mean)}</td>"
            f"<td>{_num(std)}</td><td>{_num(best)}</td><td>{solved}/{len(ss)}</td></tr>"
        )
    out.append("</tbody></table>")
    paths = [s.path for s in summaries]
    out.append("<h3>Curves</h3>" + _png(plot.make_figure(paths, x="frames")[0]))
    if any(s.evals for s in summaries):
        out.append(_png(plot.make_figure(paths, x="minutes", y="eval/return_mean")[0]))
    best = []
    for g in groups:
        ss = sorted(
            (by_path[r.path] for r in g.runs), key=lambda s: -np.inf if s.best is None else s.best
        )
        video = ss[-1].best_video() if ss else None
        if video is not None:
            best.append(_video(video, page_dir, f"{g.label}: best eval {_num(ss[-1].best)}"))
    if best:
        out.append(
            "<h3>Best video of each configuration</h3><div class='videos'>"
            + "".join(best)
            + "</div>"
        )
    return "\n".join(out)


def _run_name(path: Path, page_dir: Path) -> str:
    """A run's name on the page: its path from the page (its folder's name when the page is in it)."""
    rel = Path(os.path.relpath(path, page_dir)).as_posix()
    return Path(path).resolve().name if rel == "." else rel


def _run_section(s: RunSummary, page_dir: Path) -> str:
    rel = _run_name(s.path, page_dir)
    overrides, sessions = s.command()
    out = [f"<section class='run' id='{_esc(rel)}'><h2>{_esc(rel)}</h2>"]
    for session in sessions:
        machine = " | ".join(
            str(session[k]) for k in ("cpu", "gpu", "torch", "commit") if session.get(k)
        )
        out.append(
            f"<p><code>{_esc(session.get('command', ''))}</code><br>{_esc(session.get('started', ''))}"
            f" — {_esc(machine)} (from {session.get('start_frames', 0):,} frames)</p>"
        )
    if overrides:
        out.append("<pre>" + "\n".join(_esc(o) for o in overrides) + "</pre>")
    target = (
        f"{s.target[1]:.1f} min, {s.target[0]:,} frames" if s.target else "not reached or not set"
    )
    out.append(
        "<table class='summary'><tbody>"
        f"<tr><th class='l'>best eval</th><td>{_num(s.best)}</td></tr>"
        f"<tr><th class='l'>last eval</th><td>{_num(s.final)}</td></tr>"
        f"<tr><th class='l'>training return (last 20 episodes)</th><td>{_num(s.last_train)}</td></tr>"
        f"<tr><th class='l'>eval.target_return reached</th><td>{_esc(target)}</td></tr>"
        f"<tr><th class='l'>frames, minutes</th><td>{s.frames:,}, {s.minutes:.1f}</td></tr>"
        f"<tr><th class='l'>median frames/s</th><td>{_num(s.fps, 0)}</td></tr></tbody></table>"
    )
    if s.evals:
        out.append(
            "<table class='evals'><thead><tr><th>frames</th><th>minutes</th><th>return mean</th>"
            "<th>± std</th><th>episodes</th></tr></thead><tbody>"
        )
        for r in s.evals:
            out.append(
                f"<tr><td>{r['frames']:,}</td><td>{r['time_s'] / 60:.1f}</td>"
                f"<td>{_num(r['eval/return_mean'])}</td><td>{_num(r.get('eval/return_std'))}</td>"
                f"<td>{r.get('eval/episodes', '')}</td></tr>"
            )
        out.append("</tbody></table>")
    if len(s.data.episodes) or s.evals:
        out.append(_png(plot.make_figure([s.path], x="frames")[0]))
    if s.videos:
        clips = [_video(v, page_dir, v.stem) for v in s.videos]
        out.append("<div class='videos'>" + "".join(clips) + "</div>")
    out.append("</section>")
    return "\n".join(out)


def write_report(paths: list[str | Path], out: Path) -> tuple[Path, int]:
    """The page for the runs under `paths`; returns its path and the number of runs."""
    runs = [plot.load_run(p) for p in plot.find_runs(paths)]
    if not runs:
        raise FileNotFoundError("no runs found (no metrics.jsonl under the given paths)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    page_dir = out.parent.resolve()
    for r in runs:
        r.path = r.path.resolve()
    summaries = [RunSummary(r) for r in runs]
    title = "pixelrl report: " + ", ".join(str(p) for p in paths)
    body = [
        f"<h1>{_esc(title)}</h1>",
        f"<p>Written {time.strftime('%Y-%m-%d %H:%M')} by <code>python -m pixelrl.report</code>.</p>",
    ]
    if len(runs) > 1:
        body.append(_sweep_section(summaries, plot.group_runs(runs), page_dir))
    body += [_run_section(s, page_dir) for s in summaries]
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{_esc(title)}</title><style>{STYLE}</style><script>{SORT_SCRIPT}</script>"
        "</head><body>" + "\n".join(body) + "</body></html>"
    )
    out.write_text(page)
    return out, len(runs)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0 if argv else 2
    try:
        opts, paths = tool_args.parse(argv, {"out": ""}, paths=True)
        if opts["out"]:
            out = Path(opts["out"])
        elif len(paths) == 1 and Path(paths[0]).is_dir():
            out = Path(paths[0]) / "report.html"
        else:
            out = Path("report.html")
        path, n = write_report(paths, out)
    except (FileNotFoundError, ConfigError) as e:
        print(f"pixelrl.report: error: {e}", file=sys.stderr)
        return 2
    print(f"{path}: {n} run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
