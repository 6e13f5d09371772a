"""A client that floods the control socket slows nobody else (README: "a slow or stuck client never
slows the daemon"): the real daemon in process, on the in-process executor.

The bounds are relative to the same test's unflooded baseline, never absolute times. Before the fix
(buffered lines answered without yielding, ~2.5 ms of importlib.metadata per status) 4,000 status
lines held every other client and the runner for ~10 s: hundreds of times a status round trip and ~20
times a small job. Now the flooder gets 100 commands at once, then 200 a second, with the loop handed
back after each one, so it takes at most a fraction of the loop. The other client's status waits at
most for the flooder's one command in flight: measured 1.5-3.6x its baseline median (~0.2 ms) on a
loaded 2-core machine; bound 25x (a few thread hops of scheduling slack, still ~400 times below
the unfixed ~10 s). A submitted job's median: measured 0.4-1.0x its baseline; bound 3x."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from daemon import protocol as msg
from daemon.shell.app import Daemon
from tests.conftest import frame_pattern
from tests.shell.daemonkit import Connection, InlineFactory, running, settings_for, short_dir

pytestmark = pytest.mark.usefixtures("isolated_config")


async def status_latency(client: Connection, rounds: int = 7) -> float:
    """The median round trip of a status request."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        reply = await client.ask(msg.Status())
        times.append(time.perf_counter() - start)
        assert reply.ok
    return statistics.median(times)


async def job_time(videos, client: Connection, events: Connection) -> float:
    """The median time from ``aud submit`` to job_done (submitted by path: the inbox's settle time,
    a timer, is not part of it)."""
    times = []
    for video in videos:
        start = time.perf_counter()
        assert (await client.ask(msg.Submit(path=str(video)))).ok
        done = await asyncio.wait_for(events.event(msg.JobDone), 120)
        times.append(time.perf_counter() - start)
        assert done.file == video.name
    return statistics.median(times)


def test_a_status_flood_delays_neither_another_clients_status_nor_a_job(tiny_models, synthetic_video):
    videos = [synthetic_video(frames=8, width=32, height=32, name=f"v{i}.mp4",
                              pattern=lambda f, w, h, shift=i: frame_pattern(f + 50 * shift, w, h))
              for i in range(6)]  # six contents: none is a duplicate of another
    with short_dir() as root:
        settings = settings_for(root, tiny_models)

        async def scenario():
            async with running(Daemon(settings, InlineFactory())):
                other = await Connection.open(settings.socket_path)
                events = await Connection.open(settings.socket_path)
                assert (await events.ask(msg.Subscribe())).ok
                base_status = await status_latency(other)
                base_job = await job_time(videos[:3], other, events)

                flooder = await Connection.open(settings.socket_path)
                flooder.writer.write(b"".join(msg.encode(msg.Status(id=i)) for i in range(4000)))  # never read
                flooded_status = await status_latency(other)
                flooded_job = await job_time(videos[3:], other, events)
                flooder.writer.transport.abort()
                for c in (other, events):
                    await c.close()
                return base_status, flooded_status, base_job, flooded_job

        base_status, flooded_status, base_job, flooded_job = asyncio.run(scenario())
    assert flooded_status <= 25 * base_status, (base_status, flooded_status)
    assert flooded_job <= 3 * base_job, (base_job, flooded_job)
