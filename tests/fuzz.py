"""``make fuzz``: random and structured garbage against every service in one process,
and against a chat cluster of two servers through its Redis channel.

    .venv/bin/python -m tests.fuzz [SECONDS]       (default 60; FUZZ_SECONDS too)

Loopback only, bounded in time.  Fails (exit 1) if the server dies, logs a
traceback, stops answering a well-behaved client during the run, or ends
with its memory more than 20% above where it was after a warm-up, once the
fuzzing connections are closed.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from tests.hostile import SERVICES, spb, spbKey, startSuite, wellBehaved
from tests.redisserver import RedisServer
from tests.support import LineClient, ServiceProcess
from tests.wsclient import WebSocketClient

TLS_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) + b"\x00" * 400
HTTP = b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\r\n"
# Every op; CREATE and UPDATE with random payloads would store random keys,
# memory the server rightly keeps, so writes come from a bounded key set.
OPS = (0x01, 0x02, 0x11, 0x13, 0x14, 0x20, 0x7F, 0xFF, 0x00)
WRITES = (0x10, 0x12)


def garbage(rng: random.Random, service: str) -> bytes:
    """One payload: random, or shaped to hit a parser's edges."""
    kind = rng.randrange(12)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 4096))
    if kind == 1:
        return b"\x00" * rng.randrange(1, 2000)
    if kind == 2:
        return b"text\r" * rng.randrange(1, 500)  # CR without LF
    if kind == 3:
        return b"\xff\xfe\xc3\x28\xed\xa0\x80 not utf-8\n" * rng.randrange(1, 50)
    if kind == 4:
        return b"A" * rng.choice((70_000, 300_000, 1_100_000))  # over every line limit, no newline
    if kind == 5:
        return TLS_HELLO
    if kind == 6:
        return HTTP
    if kind == 7:
        return b"/nick \x1b[31mred\n/join #" + rng.randbytes(40) + b"\n/msg nobody hi\n/me \u202e\n".replace(
            b"\\u202e", "\u202e".encode()
        )
    if kind == 8:  # SPB/1 frames with every op and random payloads
        frames = [spb(rng.choice(OPS), rng.randrange(2**32), rng.randbytes(rng.randrange(0, 60)))
                  for _ in range(rng.randrange(1, 200))]
        frames.append(spb(rng.choice(WRITES), 3, spbKey(b"fuzz%d" % rng.randrange(100)) + rng.randbytes(50)))
        return b"".join(frames)
    if kind == 9:  # bad lengths: under 5, huge, and a short key
        return rng.choice((struct.pack(">I", rng.randrange(5)) + b"\x11\x00\x00\x00\x01",
                           struct.pack(">I", 0xFFFFFFF0) + b"\x11",
                           spb(0x11, 1, b"\x00\x09ab"), spb(0x10, 2, b"\x04\x01")))
    if kind == 10:  # a well-formed kv load, to mix real work in
        key = b"fuzz%d" % rng.randrange(100)
        return spb(0x10, 1, spbKey(key) + rng.randbytes(100)) + spb(0x11, 2, spbKey(key))
    return b"create k v\nread k\nlist\n" + rng.randbytes(20) + b"\nupdate k " + b"x" * 70_000 + b"\n"


def fuzzer(port: int, service: str, seed: int, stop: threading.Event, stats: Counter) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.settimeout(0.2)
                for _ in range(rng.randrange(1, 6)):
                    payload = garbage(rng, service)
                    sock.sendall(payload)
                    stats["bytes"] += len(payload)
                    try:
                        sock.recv(65536)
                    except (TimeoutError, BlockingIOError):
                        pass
                if rng.random() < 0.3:  # an abrupt disconnect: RST instead of FIN
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                stats["connections"] += 1
        except OSError:
            stats["cut"] += 1  # the server closed on us: expected for most garbage


# -- the web chat: HTTP and WebSocket frames ----------------------------------------


def wsFrame(rng: random.Random, opcode: int, payload: bytes, masked: bool = True, final: bool = True) -> bytes:
    """One WebSocket frame, masked as a browser's are (or not, which a server must refuse)."""
    first = (0x80 if final else 0) | opcode | (rng.choice((0, 0x40)) if rng.random() < 0.05 else 0)
    length = len(payload)
    bit = 0x80 if masked else 0
    if length < 126:
        header = struct.pack("!BB", first, bit | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, bit | 127, length)
    if not masked:
        return header + payload
    mask = rng.randbytes(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def webJunk(rng: random.Random) -> bytes:
    """What an upgraded WebSocket is sent: events with bad fields, bad JSON and bad frames."""
    kind = rng.randrange(10)
    if kind == 0:
        return wsFrame(rng, 1, b"[" * rng.choice((100, 3000, 100_000)))  # nesting
    if kind == 1:
        return wsFrame(rng, 1, rng.randbytes(rng.randrange(1, 300)))  # text that is not UTF-8 or JSON
    if kind == 2:
        text = rng.choice(("\u202e", "\u001b[2J", "x" * 70_000, "/nick " + "\u0000" * 5, "/join #" + "a" * 300))
        return wsFrame(rng, 1, json.dumps({"type": rng.choice(("say", "command", "x", 7)), "text": text}).encode())
    if kind == 3:
        return wsFrame(rng, 1, json.dumps({"type": "say", "text": "hello"}).encode(), masked=False)
    if kind == 4:
        return wsFrame(rng, 1, b'{"type": "say", "te', final=False)  # a message begun and never finished
    if kind == 5:
        return wsFrame(rng, 9, rng.randbytes(rng.choice((10, 200))))  # ping, or a control frame too long
    if kind == 6:
        return wsFrame(rng, 2, rng.randbytes(rng.randrange(1, 2000)))  # binary
    if kind == 7:
        return struct.pack("!BBQ", 0x81, 0xFF, 2**63 - 1) + b"mask"  # a length no one will send
    if kind == 8:
        return wsFrame(rng, rng.choice((3, 4, 5, 11, 15)), b"reserved opcode")
    return wsFrame(rng, 8, struct.pack("!H", rng.choice((1000, 1002, 999, 5000))) + b"bye")


def webFuzzer(port: int, seed: int, stop: threading.Event, stats: Counter) -> None:
    """HTTP junk and hostile WebSocket traffic against the web face."""
    rng = random.Random(seed)
    host = f"127.0.0.1:{port}"
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.settimeout(0.2)
                if rng.random() < 0.3:
                    junk = rng.choice((
                        rng.randbytes(rng.randrange(1, 4000)),
                        b"GET / HTTP/1.1\r\nHost: " + b"h" * 70_000 + b"\r\n\r\n",
                        b"GET /ws HTTP/1.1\r\nHost: evil.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nSec-WebSocket-Version: 13\r\n"
                        b"Origin: http://evil.example\r\n\r\n",
                        b"POST / HTTP/1.1\r\nHost: " + host.encode() + b"\r\nContent-Length: 99999999\r\n\r\nx",
                    ))
                    sock.sendall(junk)
                    stats["web bytes"] += len(junk)
                else:
                    sock.sendall(
                        f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nSec-WebSocket-Version: 13\r\n"
                        f"Origin: http://{host}\r\n\r\n".encode()
                    )
                    for _ in range(rng.randrange(1, 8)):
                        frame = webJunk(rng)
                        sock.sendall(frame)
                        stats["web bytes"] += len(frame)
                try:
                    sock.recv(65536)
                except (TimeoutError, BlockingIOError):
                    pass
                if rng.random() < 0.3:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                stats["web connections"] += 1
        except OSError:
            stats["cut"] += 1


def joinRoom(client: WebSocketClient, room: str) -> None:
    client.send({"type": "say", "text": f"/join {room}"})
    client.until(lambda event: event.get("type") == "state" and event.get("room") == room, limit=100_000)


def webProbe(port: int, said: int, keeper: WebSocketClient) -> None:
    """
    A well-behaved browser, new each time, joins a room that ``keeper`` (a
    browser connected all along) holds open, so the rooms the fuzzers open
    (--max-rooms) cannot keep it out, and says a line: ``keeper`` gets it
    (a sender is not sent its own line back; the page shows it itself).
    """
    client = WebSocketClient(port, timeout=10)
    try:
        joinRoom(client, "#webprobe")
        line = f"web probe {said}"
        client.send({"type": "say", "text": line})
        keeper.until(lambda event: event.get("type") == "message" and event.get("text") == line, limit=100_000)
    finally:
        client.close()


# -- the chat cluster's Redis channel ---------------------------------------------

NASTY_TEXT = ("\x1b]0;owned\x07", "\x1b[2J", "\u202e", "\r\n*** fake: admin joined", "\x9b31m", "\x00", "ok")


def channelJunk(rng: random.Random) -> bytes:
    """One message for the cluster's channel: junk, or events shaped like the servers' with bad fields."""
    kind = rng.randrange(8)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 2000))
    if kind == 1:
        return b"\n" + rng.choice((b"[", b"{\"a\":")) * rng.choice((1000, 50_000, 200_000))
    if kind == 2:
        return b"\n" + rng.choice((b"1e300", b"-1e20", b"NaN", b"Infinity", b"1" + b"0" * 5000, b"true", b"null"))
    node = rng.choice(("f1", "f2", "evil", "", "a b", 7))
    field = lambda: rng.choice(("bob", "#lobby", "", None, 1e300, -1e20, [], {}, "x" * 70_000, True,  # noqa: E731
                                "".join(rng.choices(NASTY_TEXT, k=3))))
    event = rng.choice((
        ["m", "#lobby", rng.choice((1.0, 1e300, -5, "noon")), rng.choice(("bob", "b b")), "say", field(), "line"],
        ["n", "#lobby", rng.choice(("join", "part", "quit", "nick", "shout")), 1.0, rng.choice(("bob", "b b")),
         rng.choice(("line", "Web", field())), field(), field()][: rng.randrange(3, 9)],
        ["g", rng.choice(("f1", "f2", "ghost")), [["bob", "#lobby"]], "server lost"],
        ["x", rng.choice(("f1", "f2")), "bob"],
        ["p", rng.choice(("f1", "f2")), "bob", 1.0, "mallory", field(), rng.choice(("web", field()))],
        [field() for _ in range(rng.randrange(8))],
    ))
    batch = {"n": node, "t": rng.choice((0, 1.0, 1e300)), "e": [event] * rng.randrange(1, 4)}
    ids = rng.choice((b"", b"1-0", b"junk", b"1-0,2-0"))
    return ids + b"\n" + json.dumps(batch).encode()


def channelFuzzer(port: int, seed: int, stop: threading.Event, stats: Counter) -> None:
    rng = random.Random(seed)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        while not stop.is_set():
            message = channelJunk(rng)
            sock.sendall(b"*3\r\n$7\r\nPUBLISH\r\n$16\r\nsockproto:events\r\n$%d\r\n%s\r\n" % (len(message), message))
            reply = b""
            while not reply.endswith(b"\r\n"):
                reply += sock.recv(100)
            stats["published"] += 1
            time.sleep(0.001)


def startCluster(redis: RedisServer) -> list[ServiceProcess]:
    nodes = []
    for name in ("f1", "f2"):
        node = ServiceProcess("sockproto-chat", "--listen", "tcp:0", "--history", ":memory:", "--flood-rate", "0",
                              "--cluster", redis.url, "--node-name", name)
        node.start()
        node.waitForLog(f"cluster: {name} joined the chat servers")
        nodes.append(node)
    return nodes


def main(seconds: float) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="sockproto-fuzz-"))
    service = startSuite(workdir)
    redis = RedisServer().start()
    nodes = startCluster(redis)
    failures: list[str] = []
    stats: Counter = Counter()
    try:
        sender, receiver = (LineClient.tcp(node.port("chat"), timeout=5) for node in nodes)
        for client in (sender, receiver):
            client.until("joined #lobby")
        ports = {name: service.port(name) for name in SERVICES}
        stop = threading.Event()
        threads = [threading.Thread(target=fuzzer, args=(ports[name], name, seed, stop, stats), daemon=True)
                   for seed, name in enumerate(SERVICES * 2)]
        threads.append(threading.Thread(target=channelFuzzer, args=(redis.port, 99, stop, stats), daemon=True))
        webPort = service.port("chat-web")
        keeper = WebSocketClient(webPort, timeout=10)
        joinRoom(keeper, "#webprobe")
        threads += [threading.Thread(target=webFuzzer, args=(webPort, 200 + seed, stop, stats), daemon=True)
                    for seed in range(2)]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        probes = 0
        warmup = started + min(10.0, seconds * 0.15)
        baseline = None
        slowest = 0.0
        while time.monotonic() - started < seconds:
            for name in SERVICES:
                try:
                    slowest = max(slowest, wellBehaved(service, name))
                except Exception as e:
                    failures.append(f"{name} stopped answering a well-behaved client: {e!r}")
            probes += 1
            try:
                webProbe(webPort, probes, keeper)
            except Exception as e:
                failures.append(f"the web chat stopped answering a well-behaved browser: {e!r}")
            try:  # a line said on one server of the cluster reaches the other, through the junk
                sender.send(f"probe {probes}\n")
                receiver.until(f"probe {probes}")
            except Exception as e:
                failures.append(f"the chat cluster stopped carrying lines: {e!r}")
            if baseline is None and time.monotonic() > warmup:
                baseline = service.rss()
            if service.proc.poll() is not None:
                failures.append(f"the server died with status {service.proc.returncode}")
                break
            time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(10)
        time.sleep(2)  # the fuzzing connections close
        if service.proc.poll() is None:
            for name in SERVICES:
                try:
                    wellBehaved(service, name)
                except Exception as e:
                    failures.append(f"{name} does not answer after the run: {e!r}")
            final = service.rss()
            baseline = baseline or final
            growth = final / baseline - 1
            print(f"memory: {baseline >> 20} MiB after warm-up, {final >> 20} MiB at the end ({growth:+.0%})")
            if growth > 0.20:
                failures.append(f"memory grew {growth:.0%} (over 20%)")
        for marker in ("Traceback", "Unhandled"):
            if marker in service.log:
                failures.append(f"the log has a {marker}:\n" + service.log[service.log.index(marker) - 200:][:3000])
        for node in nodes:
            for marker in ("Traceback", "Unhandled", "lost the link to Redis", "CRITICAL", "critical"):
                if marker in node.log:
                    failures.append(f"a cluster node's log has {marker!r}:\n"
                                    + node.log[node.log.index(marker) - 200:][:3000])
        sender.close()
        receiver.close()
        dropped = sum(node.log.count("cluster: dropped") for node in nodes)
        print(f"cluster: {stats['published']} junk messages on the channel ({dropped} drop log lines), "
              f"{probes} lines carried through it")
        print(f"web: {stats['web connections']} hostile connections, {stats['web bytes'] >> 20} MiB")
        print(f"fuzz: {seconds:g} s, {stats['connections']} connections, {stats['bytes'] >> 20} MiB of garbage, "
              f"{stats['cut']} cut off by the server; slowest well-behaved exchange {slowest * 1000:.0f} ms")
    finally:
        service.stop()
        for node in nodes:
            node.stop()
        redis.cleanup()
    for failure in failures[:20]:
        print("FAIL:", failure)
    print("fuzz: FAILED" if failures else "fuzz: passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("FUZZ_SECONDS", 60))))
