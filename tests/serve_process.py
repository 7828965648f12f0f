"""`recast serve` in its own process, started the way the README starts it."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServeProcess:
    base: str
    port: int
    pid: int


@contextlib.contextmanager
def recast_serve_demo(*extra: str, wait_s: float = 60, port: int = 0) -> Iterator[ServeProcess]:
    """`recast serve --demo [extra options]` in its own process, as the README starts it, on `port` (0: a free
    one), once it answers /healthz; stopped with SIGINT on exit (unless it has exited already)."""
    port = port or _free_port()
    command = [sys.executable, "-m", "stream.cli", "serve", "--demo", "--port", str(port), "--ice-host", "127.0.0.1",
               *extra]
    # a file, not a pipe: nobody reads it while the server runs
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(round(wait_s / 0.2)):
                if server.poll() is not None:
                    log.seek(0)
                    raise AssertionError(f"recast serve exited with {server.returncode}: {log.read()}")
                with contextlib.suppress(OSError), urllib.request.urlopen(base + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        break
                time.sleep(0.2)
            else:
                raise AssertionError(f"recast serve did not answer /healthz within {wait_s:.0f} s")
            yield ServeProcess(base, port, server.pid)
        finally:
            server.send_signal(signal.SIGINT)  # SIGTERM would drain for --drain-s first
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                raise AssertionError("recast serve did not stop within 15 s of SIGINT") from None
