"""Run tracking (pixelrl/tracking.py): metrics.jsonl kept as one history."""

import json

from pixelrl.tracking import drop_rows_after

from .conftest import metrics


def test_resume_drops_the_rows_logged_after_the_checkpoint(tmp_path):
    """A resumed run replays the frames after its checkpoint: the log keeps one history."""
    log = tmp_path / "metrics.jsonl"
    rows = [{"frames": f, "time_s": f / 10, "train/episode_return": -21.0} for f in (10, 20, 30)]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"frames": 4')  # torn line
    assert drop_rows_after(log, 20) == 1
    assert [r["frames"] for r in metrics(tmp_path)] == [10, 20]
    assert log.read_text().endswith("}\n")  # the torn line is gone: new rows start cleanly
    assert drop_rows_after(log, 20) == 0 and drop_rows_after(tmp_path / "nope.jsonl", 5) == 0
