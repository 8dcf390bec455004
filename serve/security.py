"""Transport security and bearer-token auth for semore-serve.

A policy server drives actuators, so anything that can reach its port can move the robot:
TLS (optionally mutual) protects the channel, a bearer token in the ``authorization`` metadata
proves the caller may act. The health service stays open so orchestrators can probe readiness
without holding a token; it reveals nothing but SERVING / NOT_SERVING.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from pathlib import Path

import grpc

log = logging.getLogger(__name__)

AUTH_EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


def load_tokens(path: str | Path) -> list[bytes]:
    """Reads accepted tokens, one per line (several allow rotation); blank lines and # comments skipped."""
    lines = Path(path).read_text().splitlines()
    tokens = [line.strip().encode() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not tokens:
        raise ValueError(f"token file {path} holds no token")
    return tokens


def server_credentials(
    cert: str | Path, key: str | Path, client_ca: str | Path | None = None
) -> grpc.ServerCredentials:
    """TLS with the server's certificate chain and key; a client CA turns on mutual TLS."""
    root = Path(client_ca).read_bytes() if client_ca else None
    return grpc.ssl_server_credentials(
        [(Path(key).read_bytes(), Path(cert).read_bytes())],
        root_certificates=root,
        require_client_auth=root is not None,
    )


def _deny_handler(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    # The refusal must have the same streaming shape as the real method, or grpc would wait for
    # a request message that a streaming client may not send before it hears back.
    async def abort(_request, context: grpc.aio.ServicerContext):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


def _token_from(metadata) -> tuple[bool, bytes | None]:
    """(header present, bearer token or None) from invocation metadata."""
    for key, value in metadata or ():
        if key != "authorization":
            continue
        raw = value.encode() if isinstance(value, str) else value
        scheme, _, token = raw.partition(b" ")
        return True, (token.strip() if scheme.lower() == b"bearer" else None)
    return False, None


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Lets a call through only with ``authorization: Bearer <token>`` for an accepted token.

    Runs once per call (not per stream message), so it costs nothing on the streaming hot path.
    """

    def __init__(self, tokens: list[bytes], on_denied: Callable[[str], None] | None = None) -> None:
        self._tokens = list(tokens)
        self._on_denied = on_denied

    def _accepted(self, token: bytes | None) -> bool:
        if not token:
            return False
        # compare_digest against every token (no early exit): timing does not reveal which matched.
        ok = False
        for accepted in self._tokens:
            ok |= hmac.compare_digest(token, accepted)
        return ok

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if method.startswith(AUTH_EXEMPT_PREFIXES):
            return await continuation(handler_call_details)
        present, token = _token_from(handler_call_details.invocation_metadata)
        if self._accepted(token):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: let grpc answer UNIMPLEMENTED
            return None
        message = "invalid bearer token" if present else "missing 'authorization: Bearer <token>' metadata"
        log.warning(
            "rejected call to %s: %s", method, message, extra={"event": "auth_denied", "method": method}
        )
        if self._on_denied is not None:
            self._on_denied(method.rsplit("/", 1)[-1])
        return _deny_handler(handler, message)
