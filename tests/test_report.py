"""python -m pixelrl.report on a real tiny sweep (Catch, 2 configurations x 2 seeds, videos on),
and the page opened in a real browser (Debian's headless Chromium through its WebDriver)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import run_cli

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    run_cli(
        "-m",
        "algo=actor_critic",
        "env=Catch",
        "algo.psi=td,advantage",
        "seed=1,2",
        "total_frames=6000",
        "eval.every_frames=3000",
        "eval.episodes=10",
        "video.enabled=true",
        "logger.wandb.mode=disabled",
        "logger.progress=false",
        "hydra.sweep.dir=sweep",
        cwd=root,
        check=True,
        timeout=300,
    )
    out = subprocess.run(
        [sys.executable, "-m", "pixelrl.report", "sweep"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "sweep/report.html: 4 run(s)" in out.stdout
    return root / "sweep" / "report.html"


def test_the_page_is_one_file_that_needs_nothing_from_elsewhere(sweep):
    page = sweep.read_text()
    assert "<script src" not in page and not re.search(r"""(src|href)=["']https?://""", page)
    assert page.count("<img ") >= 2 + 4  # the sweep's curves, then each run's
    # every recorded mp4 has a WebM copy beside it, and the page offers both
    mp4s = sorted(sweep.parent.rglob("videos/*.mp4"))
    assert mp4s and all(m.with_suffix(".webm").is_file() for m in mp4s)
    assert page.count('type="video/webm"') == page.count('type="video/mp4"') >= len(mp4s)


def test_the_sweep_table_and_groups(sweep):
    page = sweep.read_text()
    table = page.split("<table id='runs'>")[1].split("</table>")[0]
    assert table.count("<tr>") == 1 + 4  # a header and a row per job
    assert "algo.psi" in table and ">td<" in table and ">advantage<" in table
    groups = page.split("<table id='groups'>")[1].split("</table>")[0]
    assert groups.count("<tr>") == 1 + 2  # a header and a row per configuration
    assert "psi=td (2 seeds)" in groups and "psi=advantage (2 seeds)" in groups


def test_a_page_inside_its_run_names_the_run(sweep):
    run = sorted(p for p in sweep.parent.iterdir() if p.is_dir())[0]
    out = subprocess.run(
        [sys.executable, "-m", "pixelrl.report", str(run), f"out={run}/report.html"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    page = (run / "report.html").read_text()
    assert f"<h2>{run.name}</h2>" in page.replace("&#x27;", "'") and "<h2>.</h2>" not in page
    assert 'src="videos/' in page or "data:video/" in page  # its videos, relative to the page


def test_a_missing_path_is_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pixelrl.report", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        out.returncode == 2 and out.stderr.count("\n") == 1 and "not a run directory" in out.stderr
    )


def test_the_page_plays_in_a_real_browser(sweep, tmp_path):
    """Headless Chromium loads the page from disk: every video decodes (a real duration, at
    least its first frame ready), the tables have their rows, every curve image loaded, and
    sorting by a column works. A screenshot is kept under the test's tmp dir."""
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (CHROMIUM.is_file() and DRIVER.is_file()):
        pytest.skip("needs Debian's chromium and chromium-driver (make test installs them as root)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--autoplay-policy=no-user-gesture-required",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1400,2000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    try:
        driver.get(sweep.as_uri())
        deadline, videos = time.monotonic() + 60, []
        while time.monotonic() < deadline:
            videos = driver.execute_script(
                "return Array.from(document.querySelectorAll('video')).map("
                "v => [v.readyState, v.duration, v.currentSrc, v.error && v.error.code])"
            )
            if videos and all(v[0] >= 2 for v in videos):
                break
            time.sleep(0.5)
        assert videos, "no video elements"
        bad = [v for v in videos if v[0] < 2 or not (v[1] and v[1] > 0) or v[3]]
        assert not bad, f"videos that did not decode: {bad[:3]}"
        rows = driver.execute_script("return document.querySelectorAll('#runs tbody tr').length")
        assert rows == 4
        images = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)"
        )
        assert images and all(images)
        first = "return Array.from(document.querySelectorAll('#runs tbody tr')).map(r => r.cells[0].textContent)"
        before = driver.execute_script(first)
        header = driver.find_element("css selector", "#runs thead th")
        header.click()
        header.click()  # descending by run name
        assert driver.execute_script(first) == sorted(before, reverse=True)
        shot = tmp_path / "report.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")
    finally:
        driver.quit()
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
