"""The run folder's CSV logs: a resumed run forgets the rows past its checkpoint, and a value that
starts partway through a run gets its column."""

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


def test_a_value_that_starts_partway_through_gets_its_column_then(tmp_path):
    logger = RunLogger(tmp_path)
    logger.log("update", 2000, {"critic": 1.0})
    logger.log("update", 3000, {"critic": 2.0, "critic_composited": 5.0})
    logger.log("update", 4000, {"critic": 3.0})
    logger.close()
    resumed = RunLogger(tmp_path)  # a resumed run keeps the widened header
    resumed.log("update", 5000, {"critic": 4.0, "critic_composited": 6.0})
    resumed.close()

    assert [(r["frames"], r["critic"], r["critic_composited"]) for r in rows(tmp_path / "update.csv")] == [
        ("2000", "1.0", ""),
        ("3000", "2.0", "5.0"),
        ("4000", "3.0", ""),
        ("5000", "4.0", "6.0"),
    ]
