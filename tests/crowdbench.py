"""Crowd figures of the chat (a benchmark, not a test): ``python -m tests.crowdbench``.

Crowds that arrive at once (docs/scaling.rst).  The clients are
``../shared/tools/crowd.c`` (compiled here with ``cc -O2``; ``--crowd`` for
another path), which opens connections one after another and reads all it
is sent.  The server runs on CPU 0 (``--server-cpus``) and everything else
on CPU 1 (``--client-cpus``), as perf-compare does.

storm
    ``--clients`` (10,000) connect into ``#lobby`` at once.  Reported: the
    seconds from the first connection until the lobby holds all of them (a
    watcher asks ``/rooms`` every 50 ms), how long each newcomer (a fresh
    connection every 250 ms during the storm) waits for its ``joined`` line,
    and the server's memory per connection once they are all in.
rooms
    ``--room-clients`` (15,000) connect and each ``/join``\\ s one of
    ``--rooms`` (150) rooms; then a sender and a receiver join one of them
    (a room of 100, the receiver last, so the last one the fan-out writes)
    and the sender says ``--messages`` lines, one every 10 ms: the time from
    each line sent to its arrival, p50/p99/max, and memory per connection.
echo
    The storm's crowd against ``sockproto-echo``: how fast this machine, at
    this moment, lets the crowd connect at all (the bare accept path).

``--workers N --cluster`` runs the server as N workers of a cluster (a
Redis from tests/redisserver.py) and N times the clients, in crowds of at
most 15,000 (this machine allows 20,000 open files per process, the server's
workers and the crowd processes alike); memory is then the sum of the
workers'.

Only loopback: the server listens on 127.0.0.1 on a port below 32768, where
the crowd's own ephemeral ports cannot collide with it.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.support import ServiceProcess

ROOT = Path(__file__).resolve().parent.parent
CROWD_SOURCE = ROOT.parent / "shared" / "tools" / "crowd.c"
#: Connections one crowd process opens (of the 20,000 files a process may have here).
CROWD_MAX = 15000
_ROOM_COUNT = re.compile(r"\*\*\*   (#\S+) \((\d+)\)")


def lowPort() -> int:
    """A free port on 127.0.0.1 below 32768 (the crowd's own ports are above)."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 32768")


def processCPU(pid: int) -> float:
    """Seconds of CPU process ``pid`` has used (user and system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def listenOverflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full (each: a 1 s SYN retry)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True))["ListenOverflows"])
    return 0


def buildCrowd(source: Path) -> str:
    if not source.exists():
        raise SystemExit(f"crowdbench: no crowd client at {source} (--crowd PATH)")
    binary = os.path.join(tempfile.mkdtemp(prefix="crowdbench-"), "crowd")
    subprocess.run(["cc", "-O2", "-o", binary, str(source)], check=True)
    return binary


class Server:
    """The chat (or a cluster of workers) on a low port, pinned to the server's CPUs."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.port = lowPort()
        self.redis = None
        extra: list[str] = []
        backlog = f":backlog={args.backlog}" if args.backlog else ""
        if args.workers > 1:
            from tests.redisserver import RedisServer

            self.redis = RedisServer().start()
            extra = ["--workers", str(args.workers), "--cluster", self.redis.url]
        # No flood control: the rooms figure sends faster than 5 lines a second.
        # No per-address limit: every client comes from 127.0.0.1.
        self.service = ServiceProcess(
            "sockproto-chat", "--listen", f"tcp:{self.port}:interface=127.0.0.1{backlog}", "--history", ":memory:",
            "--flood-rate", "0", "--max-connections", "19000", "--max-connections-per-ip", "0",
            "--announce-joins-up-to", str(args.announce_joins_up_to), *extra,
        )
        self.service.start(1, timeout=60)
        subprocess.run(["taskset", "-apc", args.server_cpus, str(self.service.pid)], check=True, capture_output=True)
        if args.workers > 1:
            self.service.waitFor(lambda: self.service.log.count("listening on") >= args.workers + 1, 60, "workers")
            for pid in self.pids():
                subprocess.run(["taskset", "-apc", args.server_cpus, str(pid)], check=True, capture_output=True)

    def pids(self) -> list[int]:
        """The serving processes: the workers, else the one process."""
        if self.args.workers <= 1:
            return [self.service.pid]
        children = Path(f"/proc/{self.service.pid}/task/{self.service.pid}/children").read_text().split()
        return [int(pid) for pid in children]

    def rss(self) -> int:
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total

    def cpu(self) -> float:
        """Seconds of CPU the serving processes have used (user and system)."""
        return sum(processCPU(pid) for pid in self.pids())

    def stop(self) -> None:
        self.service.stop(timeout=60)
        if self.redis is not None:
            self.redis.stop()


class Watcher:
    """A line client that asks ``/rooms`` until the chat looks as wanted."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buffer = b""
        self.until(b"joined #lobby")

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise RuntimeError("the chat closed the watcher's connection")
            self.buffer += data
        head, _, self.buffer = self.buffer.partition(marker)
        return head + marker

    def rooms(self) -> dict[str, int]:
        # The refusal of an unknown command marks the end of the answer.
        self.sock.sendall(b"/rooms\n/crowdbench-end\n")
        self.until(b"*** rooms:\n")
        answer = self.until(b"!!! unknown command /crowdbench-end (try /help)\n").decode()
        return {name: int(count) for name, count in _ROOM_COUNT.findall(answer)}

    def waitFor(self, condition, timeout: float) -> float:
        """Ask every 50 ms until ``condition(counts)``; the monotonic time it first held."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition(self.rooms()):
                return time.monotonic()
            time.sleep(0.05)
        raise RuntimeError(f"not reached in {timeout} s: {self.rooms()}")


def startCrowds(
    binary: str, args: argparse.Namespace, port: int, clients: int, rooms: int
) -> list[subprocess.Popen[str]]:
    crowds = []
    # One source address has some 28,000 ports to one server port: past
    # 20,000 clients, the crowds connect from 127.0.0.2, 127.0.0.3... too.
    sources = str(1 + clients // 20000)
    while clients > 0:
        count = min(clients, CROWD_MAX)
        clients -= count
        command = [binary, str(port), "1", str(count), str(rooms), str(args.hold), sources]
        crowds.append(
            subprocess.Popen(
                ["taskset", "-c", args.client_cpus, *command],
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    return crowds


def newcomers(port: int, stop: threading.Event, waits: list[float]) -> None:
    """A fresh client every 250 ms: how long until it is in the lobby."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                got = b""
                while b"joined #lobby" not in got:
                    data = sock.recv(65536)
                    if not data:
                        break
                    got += data
                waits.append(time.monotonic() - started)
        except OSError as e:
            print(f"  newcomer failed: {e}", file=sys.stderr)
        stop.wait(0.25)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def endCrowds(crowds: list[subprocess.Popen[str]]) -> None:
    for crowd in crowds:
        crowd.terminate()
    for crowd in crowds:
        out, _ = crowd.communicate()
        print("  crowd:", " | ".join(line for line in out.splitlines() if line.startswith("opened")))


def storm(binary: str, args: argparse.Namespace) -> None:
    total = args.clients * args.workers
    print(f"storm: {total} clients into #lobby ({args.workers} worker(s), "
          f"announce-joins-up-to {args.announce_joins_up_to})")
    server = Server(args)
    crowds: list[subprocess.Popen[str]] = []
    try:
        watcher = Watcher(server.port)
        time.sleep(1)
        before, cpu, overflows = server.rss(), server.cpu(), listenOverflows()
        waits: list[float] = []
        stop = threading.Event()
        started = time.monotonic()
        crowds = startCrowds(binary, args, server.port, total, 0)
        probe = threading.Thread(target=newcomers, args=(server.port, stop, waits), daemon=True)
        probe.start()
        # Newcomers come and go while the crowd arrives; then the crowd and the watcher.
        watcher.waitFor(lambda counts: counts.get("#lobby", 0) >= total * 0.99, args.timeout)
        stop.set()
        probe.join()
        done = watcher.waitFor(lambda counts: counts.get("#lobby", 0) >= total + 1, args.timeout)
        cpu = server.cpu() - cpu
        overflows = listenOverflows() - overflows
        print(f"  all {total} in #lobby {done - started:.2f} s after the first connected; server CPU "
              f"{cpu:.2f} s ({cpu / total * 1e6:.0f} us an arrival, the watcher's and newcomers' share included); "
              f"listen queue overflows (on the whole machine) {overflows}")
        if waits:
            print(f"  newcomers during the storm ({len(waits)}): answered in "
                  f"max {max(waits) * 1000:.1f} ms, median {percentile(waits, 0.5) * 1000:.1f} ms")
        time.sleep(1)
        after = server.rss()
        print(f"  memory: {(after - before) / total:.0f} bytes a connection "
              f"({before >> 20} MiB before, {after >> 20} MiB after)")
    finally:
        endCrowds(crowds)
        server.stop()


def rooms(binary: str, args: argparse.Namespace) -> None:
    total = args.room_clients * args.workers
    print(f"rooms: {total} clients over {args.rooms} rooms ({args.workers} worker(s))")
    server = Server(args)
    crowds: list[subprocess.Popen[str]] = []
    try:
        watcher = Watcher(server.port)
        time.sleep(1)
        before, cpu = server.rss(), server.cpu()
        started = time.monotonic()
        crowds = startCrowds(binary, args, server.port, total, args.rooms)
        done = watcher.waitFor(lambda counts: sum(n for r, n in counts.items() if r != "#lobby") >= total, args.timeout)
        cpu = server.cpu() - cpu
        print(f"  all {total} in their rooms {done - started:.2f} s after the first connected; server CPU "
              f"{cpu:.2f} s ({cpu / total * 1e6:.0f} us an arrival and its /join)")
        time.sleep(1)
        after = server.rss()
        print(f"  memory: {(after - before) / total:.0f} bytes a connection")
        room = "#r7"
        sender, receiver = Watcher(server.port), Watcher(server.port)
        for client in (sender, receiver):
            client.sock.sendall(f"/join {room}\n".encode())
            client.until(f"joined {room}\n".encode())
        size = watcher.rooms().get(room, 0)
        delays = []
        for number in range(args.messages):
            sent = time.perf_counter()
            sender.sock.sendall(f"crowdbench {number}\n".encode())
            receiver.until(f"crowdbench {number}\n".encode())
            delays.append(time.perf_counter() - sent)
            time.sleep(0.01)
        print(f"  a line to {room} ({size} members, the receiver last): "
              f"p50 {percentile(delays, 0.5) * 1000:.2f} ms, p99 {percentile(delays, 0.99) * 1000:.2f} ms, "
              f"max {max(delays) * 1000:.2f} ms over {len(delays)} lines")
    finally:
        endCrowds(crowds)
        server.stop()


def echo(binary: str, args: argparse.Namespace) -> None:
    """The storm's crowd against sockproto-echo: the bare accept path, to compare the storm with."""
    print(f"echo: {args.clients} clients connecting to sockproto-echo (the bare accept path)")
    port = lowPort()
    backlog = f":backlog={args.backlog}" if args.backlog else ""
    service = ServiceProcess(
        "sockproto-echo", "--listen", f"tcp:{port}:interface=127.0.0.1{backlog}",
        "--max-connections", "19000", "--max-connections-per-ip", "0",
    )
    service.start(1, timeout=60)
    subprocess.run(["taskset", "-apc", args.server_cpus, str(service.pid)], check=True, capture_output=True)
    overflows, cpu = listenOverflows(), processCPU(service.pid)
    try:
        crowd = subprocess.run(
            ["taskset", "-c", args.client_cpus, binary, str(port), "1", str(args.clients), "0", "1"],
            capture_output=True, text=True, check=True,
        )
        opened = next(line for line in crowd.stdout.splitlines() if line.startswith("opened"))
        cpu = processCPU(service.pid) - cpu
        print(f"  crowd: {opened}; server CPU {cpu:.2f} s ({cpu / args.clients * 1e6:.0f} us a connection); "
              f"listen queue overflows (on the whole machine) {listenOverflows() - overflows}")
    finally:
        service.stop(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figures", nargs="*", metavar="storm|rooms|echo",
                        help="which (default: all three)")
    parser.add_argument("--clients", type=int, default=10000, help="clients of the storm (per worker)")
    parser.add_argument("--room-clients", type=int, default=15000, help="clients in rooms (per worker)")
    parser.add_argument("--rooms", type=int, default=150)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--workers", type=int, default=1, help="workers of a cluster (a Redis is started)")
    parser.add_argument("--announce-joins-up-to", type=int, default=100)
    parser.add_argument("--backlog", type=int, default=0, help="the listen backlog (default: the server's, 4096)")
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--client-cpus", default="1")
    parser.add_argument("--crowd", type=Path, default=CROWD_SOURCE, help="crowd.c")
    parser.add_argument("--hold", type=float, default=600, help="seconds each crowd stays connected at most")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for a crowd to be in")
    args = parser.parse_args()
    figures = {"storm": storm, "rooms": rooms, "echo": echo}
    for name in args.figures:
        if name not in figures:
            parser.error(f"unknown figure {name!r}: storm, rooms or echo")
    os.sched_setaffinity(0, {int(cpu) for cpu in args.client_cpus.split(",")})
    binary = buildCrowd(args.crowd)
    for name in args.figures or list(figures):
        figures[name](binary, args)


if __name__ == "__main__":
    main()
