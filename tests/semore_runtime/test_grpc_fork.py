"""A process that imports semore_runtime can start programs while its gRPC calls are in flight.

Each case runs in a fresh interpreter: gRPC reads its fork setting when it is first imported.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers.training import ROOT

# semore_runtime imported first, then a health server and a thread making calls on fresh
# channels, while the main thread starts programs through fork (a preexec_fn makes subprocess
# fork, as imageio-ffmpeg's does); prints how many of them failed to run.
CHILDREN_BESIDE_CALLS = """
import os, subprocess, threading
import semore_runtime
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

server = grpc.server(futures.ThreadPoolExecutor(2))
health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
stop = threading.Event()

def calls():
    while not stop.is_set():
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())

caller = threading.Thread(target=calls)
caller.start()
failed = sum(subprocess.run(["true"], preexec_fn=os.setpgrp).returncode != 0 for _ in range(100))
stop.set()
caller.join()
server.stop(None)
print(failed)
"""


def test_programs_started_beside_calls_all_run_once_semore_runtime_is_imported_first():
    run = subprocess.run(
        [sys.executable, "-c", CHILDREN_BESIDE_CALLS],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert int(run.stdout.split()[-1]) == 0


def test_a_fork_setting_in_the_environment_is_kept():
    run = subprocess.run(
        [sys.executable, "-c", "import os, semore_runtime; print(os.environ['GRPC_ENABLE_FORK_SUPPORT'])"],
        cwd=ROOT,
        env=os.environ | {"GRPC_ENABLE_FORK_SUPPORT": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.stdout.strip() == "1", run.stderr[-2000:]
