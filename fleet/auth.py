"""Bearer-token auth inside each replica, with semore-serve's token file and checks.

Ray Serve's gRPC proxy takes no interceptors, so the check cannot sit in front of the handlers
as ``serve.security.TokenAuthInterceptor`` does in semore-serve; every RPC calls ``check`` with
the call's metadata (which the proxy forwards) before it does anything else. The token file,
the header parsing and the constant-time comparison are semore-serve's own, so both servers
accept exactly the same tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from serve.security import TokenAuthInterceptor, _token_from, load_tokens


class AuthenticationError(PermissionError):
    """The call carries no accepted bearer token; the message says which way it failed."""


class TokenCheck:
    """Accepts a call whose ``authorization: Bearer <token>`` names a token of the file."""

    def __init__(self, token_file: Path) -> None:
        self._tokens = TokenAuthInterceptor(load_tokens(token_file))

    def check(self, metadata: Iterable[tuple[str, str]]) -> None:
        """Raises AuthenticationError unless the metadata carries an accepted token."""
        present, token = _token_from(metadata)
        if not self._tokens._accepted(token):
            raise AuthenticationError(
                "invalid bearer token" if present else "missing 'authorization: Bearer <token>' metadata"
            )
