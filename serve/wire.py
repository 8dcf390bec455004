"""PolicyService's handlers with request parsing that reports a corrupt message as the caller's fault.

grpc parses a request before the handler runs, and a ``DecodeError`` there ends the call with
UNKNOWN and a Python type name: to the client it looks like a server bug. Here a message that
does not parse reaches the handler as ``serve.core.Undecodable`` instead, and the core refuses it
with INVALID_ARGUMENT, as it does any other bad input. The method table is the generated stub's own
(``add_PolicyServiceServicer_to_server``), only its parsers are wrapped, so a new RPC in the
proto needs nothing here.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from google.protobuf.message import DecodeError

from semore_runtime.proto_gen.semore.v1 import policy_pb2_grpc
from serve.core import Undecodable


def _tolerant(parse: Callable[[bytes], object]) -> Callable[[bytes], object]:
    def parse_or_mark(data: bytes) -> object:
        try:
            return parse(data)
        except DecodeError as exc:
            return Undecodable(exc)

    return parse_or_mark


class _Collect:
    """Stands in for a server: takes what the generated ``add_..._to_server`` registers, by service."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def add_generic_rpc_handlers(self, _handlers) -> None:
        pass  # the same handlers arrive by name below

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self.services[service] = handlers


def add_policy_service(servicer: policy_pb2_grpc.PolicyServiceServicer, server: grpc.aio.Server) -> None:
    """Registers ``servicer`` on ``server`` like the generated function, with tolerant parsers."""
    collect = _Collect()
    policy_pb2_grpc.add_PolicyServiceServicer_to_server(servicer, collect)
    for service, handlers in collect.services.items():
        tolerant = {
            name: handler._replace(request_deserializer=_tolerant(handler.request_deserializer))
            for name, handler in handlers.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, tolerant),))
        server.add_registered_method_handlers(service, tolerant)
