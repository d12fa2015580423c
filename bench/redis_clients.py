"""Which Redis client for ``cluster:``: redis-py's asyncio client against coredis, beside a
bare RESP loop on an anyio socket (the floor), on one local redis-server, in one run.

    python3 -m venv /tmp/rb && /tmp/rb/bin/pip install redis==8.2.0 coredis==6.9.0 anyio
    redis-server --port 6399 --save "" --appendonly no --daemonize yes
    /tmp/rb/bin/python bench/redis_clients.py 6399

coredis is not a dependency of the project, hence the scratch venv. Prints the median of
five rounds of 5,000 ``SET ... PX`` each (sequential, then pipelined 100 at a time), the
client's CPU per round, and the server's CPU share over the whole run.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio

N = 5000
VALUE = "v" * 200


async def _redis_py(port: int) -> tuple[float, float, float]:
    import redis.asyncio as aioredis

    client: Any = aioredis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    t, cpu = time.perf_counter(), time.process_time()
    for i in range(N):
        await client.set(f"k{i}", VALUE, px=60000)
    seq = time.perf_counter() - t
    t = time.perf_counter()
    for j in range(N // 100):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(100):
                pipe.set(f"p{j}:{i}", VALUE, px=60000)
            await pipe.execute()
    piped = time.perf_counter() - t
    await client.aclose()
    return seq, piped, time.process_time() - cpu


async def _coredis(port: int) -> tuple[float, float, float]:
    import coredis  # type: ignore[import-not-found]

    client: Any = coredis.Redis(host="127.0.0.1", port=port, stream_timeout=2)
    async with client:
        t, cpu = time.perf_counter(), time.process_time()
        for i in range(N):
            await client.set(f"k{i}", VALUE, px=60000)
        seq = time.perf_counter() - t
        t = time.perf_counter()
        for j in range(N // 100):
            async with client.pipeline(transaction=False) as pipe:
                for i in range(100):
                    pipe.set(f"p{j}:{i}", VALUE, px=60000)
        piped = time.perf_counter() - t
    return seq, piped, time.process_time() - cpu


async def _bare(port: int) -> tuple[float, float, float]:
    stream = await anyio.connect_tcp("127.0.0.1", port)
    t, cpu = time.perf_counter(), time.process_time()
    for i in range(N):
        key = f"k{i}"
        await stream.send(
            f"*5\r\n$3\r\nSET\r\n${len(key)}\r\n{key}\r\n${len(VALUE)}\r\n{VALUE}\r\n"
            "$2\r\nPX\r\n$5\r\n60000\r\n".encode()
        )
        await stream.receive()
    await stream.aclose()
    return time.perf_counter() - t, 0.0, time.process_time() - cpu


def _server_cpu(port: int) -> float:
    """CPU seconds of the redis-server listening on ``port`` (Linux /proc)."""
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            if b"redis-server" in cmd and str(port).encode() in cmd:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / 100
        except OSError:
            continue
    return float("nan")


async def main(port: int) -> None:
    rows: dict[str, list[tuple[float, float, float]]] = {"redis-py": [], "coredis": [], "bare": []}
    wall, server = time.perf_counter(), _server_cpu(port)
    for _ in range(5):
        rows["redis-py"].append(await _redis_py(port))
        rows["coredis"].append(await _coredis(port))
        rows["bare"].append(await _bare(port))
    wall, server = time.perf_counter() - wall, _server_cpu(port) - server
    for name, runs in rows.items():
        seq = statistics.median(r[0] for r in runs) / N * 1e6
        piped = statistics.median(r[1] for r in runs) / N * 1e6
        cpu = statistics.median(r[2] for r in runs)
        print(f"{name:9} {seq:6.1f} us/cmd sequential {piped:5.1f} us/cmd piped cpu {cpu:.2f}s")
    print(f"redis-server CPU {server:.2f}s over {wall:.1f}s ({server / wall:.0%} of one core)")


if __name__ == "__main__":
    anyio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 6399)
