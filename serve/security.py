"""Transport security and bearer-token auth for semore-serve.

A policy server drives actuators, so anything that can reach its port can move the robot:
TLS (optionally mutual) protects the channel, a bearer token in the ``authorization`` metadata
proves the caller may act. The health service stays open so orchestrators can probe readiness
without holding a token; it reveals nothing but SERVING / NOT_SERVING.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from semore_runtime.client import AuthenticationError
from semore_runtime.tokens import read_tokens

log = logging.getLogger(__name__)

AUTH_EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)


class TokenFile:
    """The accepted tokens of a token file (``semore_runtime.tokens`` format), kept current.

    Rotating a token must not need a restart that drops every robot's stream: the file is re-read
    when it changes (one ``stat`` per call, cheap next to a TLS handshake or a model call) and on
    ``reload()`` (semore-serve calls it on SIGHUP). A file that is broken mid-edit (gone, empty)
    keeps the tokens it last had, with a warning. Open streams are never re-checked: a token is
    checked once, when a call starts.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp = self._stat()
        self._tokens = [token.encode() for token in read_tokens(self.path)]

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def reload(self) -> None:
        """Re-reads the file; a file that cannot be read or holds no token keeps the current tokens."""
        self._stamp = self._stat()
        try:
            self._tokens = [token.encode() for token in read_tokens(self.path)]
        except (OSError, ValueError) as exc:
            log.warning("keeping the current tokens: %s", exc, extra={"event": "tokens_not_reloaded"})
            return
        log.info(
            "token file %s reloaded",
            self.path,
            extra={"event": "tokens_reloaded", "tokens": len(self._tokens)},
        )

    def _accepts(self, token: bytes | None) -> bool:
        if self._stat() != self._stamp:
            self.reload()
        if not token:
            return False
        # compare_digest against every token (no early exit): timing does not reveal which matched.
        ok = False
        for accepted in self._tokens:
            ok |= hmac.compare_digest(token, accepted)
        return ok

    def check_token(self, metadata) -> None:
        """Raises AuthenticationError unless the metadata carries ``authorization: Bearer <accepted token>``."""
        present, token = _token_from(metadata)
        if not self._accepts(token):
            raise AuthenticationError(
                grpc.StatusCode.UNAUTHENTICATED,
                "invalid bearer token" if present else "missing 'authorization: Bearer <token>' metadata",
            )


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


def _deny_handler(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, details: str
) -> grpc.RpcMethodHandler:
    # The refusal must have the same streaming shape as the real method, or grpc would wait for
    # a request message that a streaming client may not send before it hears back.
    async def abort(_request, context: grpc.aio.ServicerContext):
        await context.abort(code, details)

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
    """Lets a call through only when ``authenticate`` accepts its metadata (``PolicyCore.authenticate``).

    Runs once per call, before grpc hands the call to its handler: a refused call never reads a
    request message, takes a stream slot or reaches the decoder, so a flood of calls without a
    token costs a header check each and locks no robot out. ``refuse`` (``PolicyCore.refuse``)
    counts the refusal and gives its status.
    """

    def __init__(
        self,
        authenticate: Callable[[Sequence[tuple[str, str | bytes]]], None],
        refuse: Callable[[str, Exception], tuple[grpc.StatusCode, str]],
    ) -> None:
        self._authenticate = authenticate
        self._refuse = refuse

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if method.startswith(AUTH_EXEMPT_PREFIXES):
            return await continuation(handler_call_details)
        try:
            self._authenticate(handler_call_details.invocation_metadata)
        except AuthenticationError as exc:
            denied = exc
        else:
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: let grpc answer UNIMPLEMENTED
            return None
        code, details = self._refuse(method.rsplit("/", 1)[-1], denied)
        return _deny_handler(handler, code, details)
