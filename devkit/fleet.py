"""A local fleet for tests/fleet and benchmarks.fleet_latency: run ``semore-fleet`` as a user
does, in subprocesses (plain functions, no fixtures)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class LocalFleet:
    """A foreground ``semore-fleet up`` (Ray started on this machine, owned by that process)."""

    proc: subprocess.Popen
    log: Path
    target: str  # host:port of the gRPC entry
    ray_address: str  # what later ``--address`` options join

    def stop(self, timeout: float = 120) -> int:
        """SIGTERM, as a user's Ctrl-C: the process shuts Serve and its Ray down, then exits."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fleet_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "fleet.cli", *args]


def run_fleet(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """One ``semore-fleet`` command to completion; asserts nothing (tests check the exit code).

    A local Ray has token auth on, and Ray sends its token to a cluster named by ``--address``
    only when RAY_AUTH_MODE=token says so.
    """
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    return subprocess.run(
        fleet_command(*args), cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )


def start_local_fleet(log: Path, *up_args: str, timeout: float = 300) -> LocalFleet:
    """Starts ``semore-fleet up *up_args`` in the foreground and waits for its SERVING line.

    Output goes to ``log`` (a pipe nobody reads could fill and stall the fleet).
    """
    with log.open("w") as out:
        proc = subprocess.Popen(fleet_command("up", *up_args), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("SERVING "):
                _, target, ray = line.split()
                return LocalFleet(proc, log, target, ray.removeprefix("ray="))
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    raise RuntimeError(f"semore-fleet up did not serve (exit {proc.returncode}):\n{log.read_text()[-4000:]}")
