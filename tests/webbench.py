"""Web chat figures (a benchmark, not a test): ``python -m tests.webbench``.

1. Memory per idle WebSocket client: RSS of a chat with 1,000 browsers
   connected (handshake done, welcome read), against the same process before.
2. One room of 500 receivers, all WebSocket or all line clients: a line
   client says 2,000 lines in bursts; deliveries per second until every
   receiver has every line.

The server runs on CPU 0 and this load on CPU 1 (taskset), as perf-compare does.
"""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
import time

from tests.support import LineClient, ServiceProcess
from tests.wsclient import WebSocketClient

MARK = b"MSGMARK"


def chat() -> ServiceProcess:
    service = ServiceProcess(
        "sockproto-chat", "--listen", "tcp:0", "--web", "tcp:0", "--history", ":memory:", "--flood-rate", "0",
        "--max-connections", "20000", "--idle-timeout", "0", "--max-output-buffer", str(64 << 20),
    )
    service.start(2)
    subprocess.run(["taskset", "-pc", "0", str(service.pid)], check=True, capture_output=True)
    return service


def idle(count: int = 1000) -> None:
    service = chat()
    try:
        port = service.port("chat-web")
        warm = [WebSocketClient(port) for _ in range(20)]
        for client in warm:
            client.event()
        time.sleep(0.5)
        before = service.rss()
        clients = []
        for _ in range(count):
            client = WebSocketClient(port)
            client.event()
            clients.append(client)
        time.sleep(1)
        after = service.rss()
        print(f"idle web clients: {count}, {(after - before) / count:.0f} bytes per connection in the server (RSS)")
        for client in clients + warm:
            client.sock.close()
    finally:
        service.stop()


def fanout(kind: str, receivers: int = 500, lines: int = 2000, burst: int = 20) -> float:
    service = chat()
    try:
        sockets = []
        for _ in range(receivers):
            if kind == "web":
                client = WebSocketClient(service.port("chat-web"))
                sockets.append(client.sock)
            else:
                sockets.append(socket.create_connection(("127.0.0.1", service.port("chat")), timeout=10))
        sender = LineClient.tcp(service.port("chat"))
        time.sleep(1.5)
        selector = selectors.DefaultSelector()
        counts = {}
        tails = {}
        for sock in sockets:
            sock.setblocking(False)
            try:
                while sock.recv(1 << 20):
                    pass
            except BlockingIOError:
                pass
            selector.register(sock, selectors.EVENT_READ)
            counts[sock] = 0
            tails[sock] = b""
        expected = receivers * lines
        delivered = 0
        sent = 0
        start = time.monotonic()
        while delivered < expected and time.monotonic() - start < 120:
            if sent < lines:
                chunk = min(burst, lines - sent)
                sender.send(b"".join(b"line %d %s\n" % (sent + i, MARK) for i in range(chunk)))
                sent += chunk
            for key, _ in selector.select(0.01):
                sock = key.fileobj
                try:
                    data = sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                data = tails[sock] + data
                found = data.count(MARK)
                tails[sock] = data[-(len(MARK) - 1):]
                counts[sock] += found
                delivered += found
        elapsed = time.monotonic() - start
        rate = delivered / elapsed
        print(f"{kind} receivers: {receivers}, lines: {lines}, delivered {delivered}/{expected} "
              f"in {elapsed:.2f} s: {rate:.0f} deliveries/s")
        for sock in sockets:
            sock.close()
        sender.close()
        return rate
    finally:
        service.stop()


def main() -> None:
    os.sched_setaffinity(0, {1})
    idle(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
    web = fanout("web")
    line = fanout("line")
    print(f"web/line deliveries ratio: {web / line:.2f}")


if __name__ == "__main__":
    main()
