"""Progress output: a plain log away from a terminal, a bar on one."""

import io

from training import progress as progress_module
from training.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_status_lines_and_one_line_per_evaluation():
    log = io.StringIO()
    progress = Progress(total=1000, stream=log, status_every=0.0)
    progress.update(500)
    progress.note_train(123.4)
    progress.note_eval({"frames": 500, "return": 456.7, "std": 8.9, "seconds": 90.0})
    progress.update(100)
    progress.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert lines[0].startswith("500/1000 frames (50%)")
    assert lines[1] == "eval at 500 frames: return 456.7 ± 8.9 (1.5 min into the run)"
    assert lines[2].startswith("600/1000 frames (60%)") and lines[2].endswith("eval 457, train 123")


def test_the_time_left_follows_the_latest_speed_not_the_average(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: now[0])
    log = io.StringIO()
    progress = Progress(total=10_000, stream=log, status_every=0.0)
    now[0] = 1.0  # 4000 seed frames in 1 s
    progress.update(4000)
    now[0] = 51.0  # then 100 frames with updates in 50 s
    progress.update(100)
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("4000/10000 frames (40%), 4000.0 frames/s")
    assert lines[1] == "4100/10000 frames (41%), 2.0 frames/s, 49.2 min left"


def test_a_log_stays_quiet_between_status_intervals():
    log = io.StringIO()
    progress = Progress(total=70_000, stream=log, status_every=3600.0)
    for _ in range(70_000 // 4):
        progress.update(4)
    assert log.getvalue() == ""


def test_a_terminal_gets_a_bar_with_the_latest_returns():
    terminal = Terminal()
    progress = Progress(total=1000, stream=terminal)
    progress.update(500)
    progress.note_eval({"frames": 500, "return": 456.7, "std": 8.9, "seconds": 90.0})
    progress.close()
    out = terminal.getvalue()
    assert "\r" in out and "eval=457" in out and "eval at 500 frames" in out
