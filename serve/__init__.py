"""semore-serve: the gRPC policy server (dynamic micro-batching, TLS, auth, metrics).

``serve.core`` is the service itself, without a transport; ``serve.server`` runs it on grpc.aio,
and the fleet (``fleet.replica``) on Ray Serve. Kept apart from ``semore_runtime`` because a robot
needs the client and the policy, not the server's extra dependencies (grpcio-health-checking,
grpcio-reflection, prometheus_client, Pillow).
"""
