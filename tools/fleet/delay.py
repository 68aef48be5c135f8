"""A TCP proxy that delays each direction, for the idle race: the network between a client and
the service that makes a reuse and the service's close cross.

    python3 -m tools.fleet.delay PORT [--delay 0.05]   # prints its own port, serves until stdin ends
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
import threading

from testkit import ROOT


class DelayProxyProcess:
    """The DelayProxy in a process of its own: the clients' threads here would delay its loop."""

    def __init__(self, target_port: int, delay: float = 0.05):
        self.cmd = [sys.executable, "-m", "tools.fleet.delay", str(target_port), "--delay", str(delay)]
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> DelayProxyProcess:
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None  # stdout=PIPE
        try:
            self.port = int(self.proc.stdout.readline())
        except ValueError:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("the delaying proxy did not start") from None
        return self

    def stop(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None, "start() first"
        self.proc.stdin.close()  # the proxy serves until its standard input ends
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def serve_delay_proxy(target_port: int, delay: float) -> None:
    proxy = DelayProxy(target_port, delay).start()
    print(proxy.port, flush=True)
    sys.stdin.read()
    proxy.stop()


class DelayProxy:
    """A TCP proxy adding a fixed delay each way (a network with 2 x delay round trip).

    An end-of-stream and a reset travel with the same delay as data, in order.
    """

    def __init__(self, target_port: int, delay: float = 0.05):
        self.target_port, self.delay = target_port, delay
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="delay-proxy", daemon=True)
        self.server: asyncio.AbstractServer | None = None

    def start(self) -> DelayProxy:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self.handle, "127.0.0.1", 0), self.loop
        ).result(5)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def shutdown():
            assert self.server is not None, "start() first"
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    @staticmethod
    def reset(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()

    async def pipe(self, reader, writer, other_writer) -> None:
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def deliver():
            while True:
                due, item = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                try:
                    if item == "reset":
                        self.reset(writer)
                        return
                    if item is None:
                        if writer.can_write_eof():
                            writer.write_eof()
                        return
                    writer.write(item)
                    await writer.drain()
                except OSError:
                    # The far side reset: so does this proxy toward the near side, after the delay.
                    await asyncio.sleep(self.delay)
                    self.reset(other_writer)
                    return

        task = asyncio.create_task(deliver())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + self.delay, data))
            queue.put_nowait((loop.time() + self.delay, None))
        except OSError:
            queue.put_nowait((loop.time() + self.delay, "reset"))
        try:
            await task
        finally:
            task.cancel()

    async def handle(self, client_reader, client_writer) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            self.reset(client_writer)
            return
        try:
            await asyncio.gather(
                self.pipe(client_reader, server_writer, client_writer),
                self.pipe(server_reader, client_writer, server_writer),
                return_exceptions=True,
            )
        except asyncio.CancelledError:
            pass  # the proxy stops: a handler ends quietly (asyncio logs a cancelled one as an error)
        finally:
            for w in (client_writer, server_writer):
                w.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="A TCP proxy to 127.0.0.1:PORT adding a delay each way.")
    p.add_argument("port", type=int)
    p.add_argument("--delay", type=float, default=0.05, help="seconds each way (default 0.05)")
    args = p.parse_args(argv)
    serve_delay_proxy(args.port, args.delay)
    return 0


if __name__ == "__main__":
    sys.exit(main())
