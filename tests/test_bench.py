"""python -m pixelrl.bench on a tiny budget prints ratio lines and writes parseable JSON."""

import json
import subprocess
import sys


def test_bench_catch_prints_ratio_and_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pixelrl.bench", "which=catch", "seconds=7", f"out={out}"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CPUs" in proc.stdout and "torch" in proc.stdout  # the machine header
    line = next(line for line in proc.stdout.splitlines() if line.startswith("catch"))
    assert "x raw env" in line and "frames/s" in line
    data = json.loads(out.read_text())
    (r,) = data["results"]
    assert (
        r["name"] == "catch"
        and r["train"]["frames_per_s"] > 0
        and r["baseline"]["frames_per_s"] > 0
    )
    assert abs(r["ratio"] - r["train"]["frames_per_s"] / r["baseline"]["frames_per_s"]) < 1e-9
    assert data["machine"]["cpus"] >= 1


def test_bench_rejects_unknown_benchmark():
    proc = subprocess.run(
        [sys.executable, "-m", "pixelrl.bench", "which=nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "unknown benchmark 'nope'" in proc.stderr


def test_bench_replay_memory_reports_ratios(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pixelrl.bench",
            "which=replay_memory",
            "replay_frames=3000",
            f"out={out}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "replay_memory" in proc.stdout and "x raw" in proc.stdout
    (r,) = json.loads(out.read_text())["results"]
    assert r["frames"] == 3000 and r["raw_frame_bytes"] == 3000 * 3 * 84 * 84
    assert r["transitions"] == 3000 - 3000 // 125  # one extra slot per finished episode
    assert r["growth_ratio"] > 0 and r["sample_256_ms"] > 0
