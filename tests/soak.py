"""``make soak``: a mixed load on every service in one process, with connections churning.

    .venv/bin/python -m tests.soak [SECONDS] [PERIOD]    (defaults 300 and 60; SOAK_SECONDS too)

Loopback only, bounded in time.  Reports, for each period, the server's
resident memory, its open file descriptors and each service's request count
and latency (p50/p99); fails (exit 1) on an error in any exchange, or when
memory or descriptors grow from the first period to the last beyond noise.
"""

from __future__ import annotations

import os
import random
import socket
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from tests.hostile import openFiles, spb, spbKey, spbReply, startSuite
from tests.support import recvUntil


class Recorder:
    """Latencies and errors per service, per period."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []

    def record(self, service: str, seconds: float) -> None:
        with self.lock:
            self.latency[service].append(seconds)

    def failed(self, service: str, error: BaseException) -> None:
        with self.lock:
            self.errors.append(f"{service}: {error!r}")

    def take(self) -> dict[str, list[float]]:
        with self.lock:
            taken, self.latency = self.latency, defaultdict(list)
        return taken


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


def guard(service: str, recorder: Recorder, stop: threading.Event, body) -> None:  # type: ignore[no-untyped-def]
    while not stop.is_set():
        try:
            body()
        except Exception as e:
            if not stop.is_set():
                recorder.failed(service, e)
                time.sleep(0.5)


def echoClient(port: int, recorder: Recorder, stop: threading.Event) -> None:
    def session() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            recvUntil(sock, b"\n")
            for i in range(200):  # then reconnect: churn
                if stop.is_set():
                    return
                started = time.monotonic()
                sock.sendall(b"soak %d\n" % i)
                if recvUntil(sock, b"\n") != b"Echo: soak %d\n" % i:
                    raise AssertionError("wrong echo")
                recorder.record("echo", time.monotonic() - started)
                time.sleep(0.002)

    guard("echo", recorder, stop, session)


def jokeClient(port: int, recorder: Recorder, stop: threading.Event) -> None:
    def dialog() -> None:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            recvUntil(sock, b">> ")
            sock.sendall(b"Who's there?\r\n")
            setup = recvUntil(sock, b">> ").split(b"\r\n")[0]
            sock.sendall(setup + b" who?\r\n")
            recvUntil(sock, b"\n")
        recorder.record("joke", time.monotonic() - started)
        time.sleep(0.05)

    guard("joke", recorder, stop, dialog)


def kvClient(port: int, seed: int, recorder: Recorder, stop: threading.Event) -> None:
    rng = random.Random(seed)

    def session() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            for i in range(500):
                if stop.is_set():
                    return
                key = spbKey(b"soak%d-%d" % (seed, rng.randrange(200)))
                started = time.monotonic()
                if rng.random() < 0.3:
                    sock.sendall(spb(0x13, i, key) + spb(0x10, i, key + rng.randbytes(64)))
                    spbReply(sock)
                    op = spbReply(sock)[0]
                    expected = (0x90,)
                else:
                    sock.sendall(spb(0x11, i, key))
                    op = spbReply(sock)[0]
                    expected = (0x91, 0xFF)  # found, or not written yet
                if op not in expected:
                    raise AssertionError(f"kv reply op 0x{op:02x}")
                recorder.record("kv", time.monotonic() - started)

    guard("kv", recorder, stop, session)


def chatLoad(port: int, recorder: Recorder, stop: threading.Event, receivers: int = 20) -> list[threading.Thread]:
    """Receivers that measure each line's delay from its sender's time stamp; two senders; churning joiners."""

    def receiver() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            buffer = b""
            while not stop.is_set():
                chunk = sock.recv(65536)
                if not chunk:
                    raise AssertionError("chat closed a receiver")
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                now = time.time()
                for line in lines:
                    if b"t=" in line:
                        sent = float(line.rsplit(b"t=", 1)[1])
                        recorder.record("chat", now - sent)

    def sender() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.settimeout(0.001)
            while not stop.is_set():
                sock.sendall(b"hello everyone t=%.6f\n" % time.time())
                try:
                    while sock.recv(65536):
                        pass
                except (TimeoutError, BlockingIOError):
                    pass
                time.sleep(0.02)

    def joiner() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            recvUntil(sock, b"\n")
            sock.sendall(b"/join #churn\n/quit\n")
            recvUntil(sock, b"#churn")
        time.sleep(0.2)

    threads = [threading.Thread(target=guard, args=("chat", recorder, stop, receiver), daemon=True)
               for _ in range(receivers)]
    threads += [threading.Thread(target=guard, args=("chat", recorder, stop, sender), daemon=True) for _ in range(2)]
    threads.append(threading.Thread(target=guard, args=("chat-join", recorder, stop, joiner), daemon=True))
    return threads


def main(seconds: float, period: float) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="sockproto-soak-"))
    service = startSuite(workdir)
    recorder = Recorder()
    stop = threading.Event()
    failures: list[str] = []
    rows = []
    try:
        threads = chatLoad(service.port("chat"), recorder, stop)
        threads += [threading.Thread(target=echoClient, args=(service.port(name), recorder, stop), daemon=True)
                    for name in ("echo", "echo", "proxy")]
        threads += [threading.Thread(target=jokeClient, args=(service.port("joke"), recorder, stop), daemon=True)]
        threads += [threading.Thread(target=kvClient, args=(service.port("binary"), n, recorder, stop), daemon=True)
                    for n in range(4)]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        print(f"soak: {seconds:g} s, a row every {period:g} s")
        print(f"{'min':>5} {'rss MiB':>8} {'fds':>5}  " + "  ".join(
            f"{name + ' n p50/p99 ms':>24}" for name in ("echo", "chat", "joke", "kv")))
        while time.monotonic() - started < seconds:
            time.sleep(min(period, seconds - (time.monotonic() - started)))
            if service.proc.poll() is not None:
                failures.append(f"the server died with status {service.proc.returncode}")
                break
            latency = recorder.take()
            row = (time.monotonic() - started, service.rss(), openFiles(service.pid), latency)
            rows.append(row)
            print(f"{row[0] / 60:5.1f} {row[1] / 2**20:8.1f} {row[2]:5d}  " + "  ".join(
                f"{len(latency[name]):>8} {percentile(latency[name], 0.5) * 1000:6.1f}/"
                f"{percentile(latency[name], 0.99) * 1000:<7.1f}" for name in ("echo", "chat", "joke", "kv")),
                flush=True)
        stop.set()
        for thread in threads:
            thread.join(5)
        failures += recorder.errors[:20]
        if len(rows) >= 2:
            first, last = rows[0], rows[-1]
            if last[1] > first[1] * 1.25 + (8 << 20):
                failures.append(f"memory grew from {first[1] >> 20} to {last[1] >> 20} MiB")
            if last[2] > first[2] + 20:
                failures.append(f"open descriptors grew from {first[2]} to {last[2]}")
        if "Traceback" in service.log:
            failures.append("the log has a traceback")
    finally:
        service.stop()
    for failure in failures:
        print("FAIL:", failure)
    print("soak: FAILED" if failures else "soak: passed")
    return 1 if failures else 0


if __name__ == "__main__":
    arguments = sys.argv[1:]
    total = float(arguments[0] if arguments else os.environ.get("SOAK_SECONDS", 300))
    sys.exit(main(total, float(arguments[1]) if len(arguments) > 1 else min(60.0, total / 5)))
