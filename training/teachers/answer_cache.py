"""VLM answers on disk, so a rerun (same seed, same frames) asks the VLM nothing.

Keyed by a hash of the frame's bytes, the prompt, the model and the generation settings: any of
them changing is a different question. Raw answers are stored, not parsed phrases, so improving
the parser never needs a fresh VLM pass.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

import numpy as np


def answer_key(frame: np.ndarray, prompt: str, model: str, settings: dict) -> str:
    digest = hashlib.sha256()
    digest.update(repr((frame.shape, str(frame.dtype))).encode())
    digest.update(np.ascontiguousarray(frame).tobytes())
    digest.update(json.dumps([prompt, model, settings], sort_keys=True).encode())
    return digest.hexdigest()


class AnswerCache:
    def __init__(self, path: str | Path) -> None:
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # The teacher's worker thread owns the cache after construction.
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS answers "
            "(key TEXT PRIMARY KEY, model TEXT, prompt TEXT, answer TEXT, created REAL)"
        )
        self._db.commit()

    def get(self, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT key, answer FROM answers WHERE key IN ({marks})", chunk)
            found.update(rows.fetchall())
        return found

    def put(self, rows: list[tuple[str, str]], model: str, prompt: str) -> None:
        now = time.time()
        self._db.executemany(
            "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?)",
            [(key, model, prompt, answer, now) for key, answer in rows],
        )
        self._db.commit()

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self._db.close()
