"""A loopback TCP proxy that delays every chunk it forwards, to mimic a database across a
network: ``python bench/latency_proxy.py LISTEN_PORT TARGET_PORT DELAY_MS``.

Each direction waits DELAY_MS/2 before forwarding, so one request/response round trip gains
DELAY_MS. Order within a connection is kept. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def forward() -> None:
        while True:
            due, chunk = await queue.get()
            if chunk is None:
                writer.close()
                return
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()

    task = asyncio.create_task(forward())
    try:
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                break
            queue.put_nowait((loop.time() + delay, chunk))
    finally:
        queue.put_nowait((0, None))
        await task


async def main(listen: int, target: int, delay_ms: float) -> None:
    delay = delay_ms / 2000

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(
            pipe(reader, up_writer, delay), pipe(up_reader, writer, delay), return_exceptions=True
        )

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
