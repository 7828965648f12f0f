"""`recast serve` in its own process, started the way the README starts it, and what it costs the machine (CPU time,
memory: the process and its session workers)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


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


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) the server has used: the process and its session workers, summed."""
    total = 0.0
    for each in [pid, *_children(pid)]:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def proc_stats(pid: int) -> dict[str, float]:
    """Memory, threads and descriptors of the server: the process and its session workers, summed."""
    total = {"rss_mb": 0.0, "threads": 0.0, "fds": 0.0}
    for each in [pid, *_children(pid)]:
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{each}/status").read_text()
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            total["rss_mb"] += int(fields["VmRSS"].split()[0]) / 1024
            total["threads"] += int(fields["Threads"])
            total["fds"] += len(os.listdir(f"/proc/{each}/fd"))
    return total
