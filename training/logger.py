"""Run logs: CSV files (one per kind of row), TensorBoard scalars and the learning-curve PNG."""

from __future__ import annotations

import csv
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter


class RunLogger:
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.tensorboard = SummaryWriter(str(out_dir / "tb"))
        self._columns: dict[str, list[str]] = {}

    def log(self, kind: str, frames: int, values: dict[str, float]) -> None:
        """Appends a row to `<kind>.csv` and the same scalars under `<kind>/` in TensorBoard.

        A value that a later row brings (a loss that starts partway through the run, such as
        compositing from `augment.composite_from_frames`) gets its column then, empty in the
        rows before it.
        """
        row = {"frames": frames, **values}
        path = self.out_dir / f"{kind}.csv"
        columns = self._columns.get(kind)
        if columns is None:
            columns = []
            if path.exists():  # a resumed run keeps appending under the existing header
                with path.open() as f:
                    columns = next(csv.reader(f), [])
        if new := [name for name in row if name not in columns]:
            columns = [*columns, *new]
            earlier = []
            if path.exists():
                with path.open(newline="") as f:
                    earlier = list(csv.DictReader(f))
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, columns)
                writer.writeheader()
                writer.writerows(earlier)
        self._columns[kind] = columns
        with path.open("a", newline="") as f:
            csv.DictWriter(f, columns).writerow(row)
        for name, value in values.items():
            self.tensorboard.add_scalar(f"{kind}/{name}", value, frames)

    def drop_rows_after(self, frames: int) -> None:
        """Forgets the CSV rows past `frames`: a run resumed from its checkpoint at `frames` logs
        them again, and a curve with two rows at one frame count (an evaluation of the lost run,
        then of the resumed one) would be read twice."""
        for path in self.out_dir.glob("*.csv"):
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                columns, rows = reader.fieldnames, list(reader)
            kept = [row for row in rows if int(float(row["frames"])) <= frames]
            if columns is None or len(kept) == len(rows):
                continue
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, columns)
                writer.writeheader()
                writer.writerows(kept)

    def close(self) -> None:
        self.tensorboard.close()


def plot_curve(curve: list[dict], path: Path, title: str) -> None:
    """Evaluation return against frames (and wall time on a second axis label)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    frames = [p["frames"] for p in curve]
    returns = [p["return"] for p in curve]
    stds = [p.get("std", 0.0) for p in curve]
    ax.plot(frames, returns, marker="o", ms=3)
    low = [r - s for r, s in zip(returns, stds, strict=True)]
    high = [r + s for r, s in zip(returns, stds, strict=True)]
    ax.fill_between(frames, low, high, alpha=0.2)
    ax.set_xlabel("environment frames")
    ax.set_ylabel("evaluation return")
    if curve:
        ax.set_title(f"{title} ({curve[-1]['seconds'] / 60:.1f} min wall)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
