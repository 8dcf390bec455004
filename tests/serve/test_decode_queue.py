"""DecodeQueue: one job per client at a time, other clients unaffected, and no turn freed early."""

from __future__ import annotations

import asyncio
import threading

from serve.decode_queue import DecodeQueue


async def _until(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def test_a_client_runs_one_job_at_a_time_while_others_go_ahead():
    async def main() -> None:
        queue = DecodeQueue(workers=2)
        release = threading.Event()
        started: list[tuple[str, int]] = []

        def job(client: str, i: int) -> tuple[str, int]:
            started.append((client, i))
            if client == "slow":
                release.wait(5)
            return client, i

        slow = [asyncio.ensure_future(queue.run("slow", job, "slow", i)) for i in range(3)]
        await _until(lambda: started)
        # The slow client's next frames wait their turn; the other worker is free for anyone else.
        assert await asyncio.wait_for(queue.run("quick", job, "quick", 0), 2) == ("quick", 0)
        assert started == [("slow", 0), ("quick", 0)]
        release.set()
        assert await asyncio.gather(*slow) == [("slow", 0), ("slow", 1), ("slow", 2)]
        assert started[2:] == [("slow", 1), ("slow", 2)]
        queue.shutdown()

    asyncio.run(main())


def test_cancelled_calls_do_not_free_their_clients_turn_early():
    async def main() -> None:
        queue = DecodeQueue(workers=2)
        release = threading.Event()
        started: list[int] = []

        def job(i: int) -> int:
            started.append(i)
            release.wait(5)
            return i

        running, waiting, last = (asyncio.ensure_future(queue.run("client", job, i)) for i in range(3))
        await _until(lambda: started)
        running.cancel()  # its job goes on in a worker...
        waiting.cancel()  # ...and this one gives up its place in the line
        await asyncio.sleep(0.1)
        assert started == [0]  # so the client's next job still waits for the worker
        release.set()
        assert await asyncio.wait_for(last, 2) == 2
        assert started == [0, 2] and running.cancelled() and waiting.cancelled()
        queue.shutdown()

    asyncio.run(main())
