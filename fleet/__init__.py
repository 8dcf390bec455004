"""semore-fleet: the same ``semore.v1.PolicyService`` that semore-serve offers, run on Ray Serve.

Ray Serve does the scaling (replicas on any node of a Ray cluster, autoscaling, rolling
upgrades) and the entry point (its gRPC proxy); this package adds only what is Semore's: the
replica that serves a policy (``fleet.replica``), how a fleet is put up and taken down
(``fleet.control``) and the ``semore-fleet`` command (``fleet.cli``). Each policy version is a
Serve application of its own, which a client picks with the ``application`` gRPC metadata.
"""
