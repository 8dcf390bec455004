"""The run folder's CSV logs: a resumed run forgets the rows past its checkpoint."""

import csv

from training.logger import RunLogger


def rows(path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_resumed_run_drops_the_rows_past_its_checkpoint(tmp_path):
    logger = RunLogger(tmp_path)
    for frames, value in [(5000, 1.0), (10000, 2.0), (15000, 3.0)]:
        logger.log("eval", frames, {"return": value})
    logger.log("train", 8000, {"return": 7.0})
    logger.close()

    resumed = RunLogger(tmp_path)
    resumed.drop_rows_after(10000)  # the checkpoint was at 10k: 15k is evaluated again
    resumed.log("eval", 15000, {"return": 4.0})
    resumed.close()

    assert [(r["frames"], r["return"]) for r in rows(tmp_path / "eval.csv")] == [
        ("5000", "1.0"),
        ("10000", "2.0"),
        ("15000", "4.0"),
    ]
    assert [r["frames"] for r in rows(tmp_path / "train.csv")] == ["8000"]
