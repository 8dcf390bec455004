"""The bearer-token file format, read the same way by semore-serve, the fleet and PolicyClient.

One token per line; blank lines and ``#`` comments are skipped; several tokens allow rotation
(the server accepts any of them, a client sends the first). One reader for both sides, so a file
a server accepts always works for its clients too.
"""

from __future__ import annotations

import os
from pathlib import Path


def read_tokens(path: str | os.PathLike) -> list[str]:
    """The tokens of a token file, in file order; ValueError when it holds none."""
    tokens = [line.strip() for line in Path(path).read_text().splitlines()]
    tokens = [token for token in tokens if token and not token.startswith("#")]
    if not tokens:
        raise ValueError(f"token file {path} holds no token")
    return tokens
