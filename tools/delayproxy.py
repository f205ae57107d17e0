#!/usr/bin/env python3
"""A TCP proxy that adds round-trip time and limits bandwidth: real network latency for
grids on one machine (this kernel has no netem).

    tools/delayproxy.py [--rtt-ms MS] [--up-mbit M] [--down-mbit M] [--window BYTES]
                        [--stats FILE] LISTEN=TARGET [LISTEN=TARGET ...]

Each LISTEN=TARGET (host:port=host:port) accepts connections on LISTEN and joins each to
a new connection to TARGET. Every byte is held for half the round-trip time in each
direction. Bandwidth is a shared link per direction across every mapping and connection
("up" is towards the targets: a client's uplink when the targets are its storage
servers), modelled as serialization (bytes / rate) before the propagation delay. Each
connection holds at most --window bytes in flight per direction (default 4 MiB, Linux's
usual largest TCP send window), counted until their acknowledgement would be back a
round trip after they were sent, so a window-limited sender behaves as over a real path
(at most a window per round trip).

It prints "ready" on stdout once every LISTEN is bound, runs until SIGTERM or SIGINT, and
then writes the bytes carried per mapping and direction to --stats (JSON) if given, or
whenever it gets SIGUSR1.

Examples:
    tools/delayproxy.py --rtt-ms 80 127.0.0.1:9001=127.0.0.1:8001
    tools/delayproxy.py --rtt-ms 20 --up-mbit 10 --stats /tmp/p.json \\
        127.0.0.1:9001=127.0.0.1:8001 127.0.0.1:9002=127.0.0.1:8002
"""
import argparse
import asyncio
import collections
import json
import os
import signal
import sys
import time


def hostport(text):
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not host:port")
    return host.strip("[]"), int(port)


def mapping(text):
    listen, sep, target = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not LISTEN=TARGET (host:port=host:port)")
    return hostport(listen), hostport(target)


class Link:
    """One direction's shared bandwidth: when the link is next free."""

    def __init__(self, mbit):
        self.rate = mbit * 1e6 / 8 if mbit else None  # bytes per second
        self.free_at = 0.0

    def departure(self, now, n):
        if self.rate is None:
            return now
        self.free_at = max(now, self.free_at) + n / self.rate
        return self.free_at


class Direction:
    """Bytes from one side of a connection to the other, in order, each released at its
    arrival time. Pauses its source when more than `window` bytes are in flight."""

    def __init__(self, proxy, pair, link, counter, key):
        self.proxy, self.pair, self.link, self.counter, self.key = proxy, pair, link, counter, key
        self.queue = collections.deque()  # (arrival time, bytes)
        self.queued = 0
        self.source = None  # transport read from
        self.dest = None  # transport written to (None until connected)
        self.timer = None
        self.eof = False  # the source finished; pass it on after the queue
        self.source_paused = False
        self.dest_blocked = False
        self.ended = False  # the end was passed on

    def push(self, data):
        loop = self.proxy.loop
        now = loop.time()
        arrival = self.link.departure(now, len(data)) + self.proxy.one_way
        self.queue.append((arrival, data))
        self.queued += len(data)
        if self.queued > self.proxy.window and self.source and not self.source_paused:
            self.source.pause_reading()
            self.source_paused = True
        self.schedule()

    def finish(self):
        self.eof = True
        self.schedule()

    def schedule(self):
        if self.timer or self.dest is None or self.dest_blocked:
            return
        loop = self.proxy.loop
        if self.queue:
            self.timer = loop.call_at(max(self.queue[0][0], loop.time()), self.release)
        elif self.eof:
            self.eof = False
            self.ended = True
            if self.dest.can_write_eof() and not self.dest.is_closing():
                try:
                    self.dest.write_eof()
                except OSError:  # the other side is gone already
                    self.dest.close()
            self.pair.ended()

    def release(self):
        self.timer = None
        now = self.proxy.loop.time()
        while self.queue and self.queue[0][0] <= now and not self.dest_blocked:
            _, data = self.queue.popleft()
            self.counter[self.key] += len(data)
            if not self.dest.is_closing():
                self.dest.write(data)
            # In flight until its acknowledgement would be back, one more one-way delay
            # later: at most a window per round trip, as over TCP.
            if self.proxy.one_way > 0:
                self.proxy.loop.call_later(self.proxy.one_way, self.acked, len(data))
            else:
                self.acked(len(data))
        self.schedule()

    def acked(self, n):
        self.queued -= n
        if self.source_paused and self.queued <= self.proxy.window // 2 and not self.source.is_closing():
            self.source.resume_reading()
            self.source_paused = False

    def set_blocked(self, blocked):
        self.dest_blocked = blocked
        if not blocked:
            self.schedule()


class Side(asyncio.Protocol):
    """One of a proxied connection's two sockets. `out` carries what it reads; `into`
    what is written to it."""

    def __init__(self, pair, out, into):
        self.pair, self.out, self.into = pair, out, into

    def connection_made(self, transport):
        transport.set_write_buffer_limits(high=256 << 10)
        self.transport = transport
        self.out.source = transport
        self.into.dest = transport
        self.into.schedule()

    def data_received(self, data):
        self.out.push(data)

    def eof_received(self):
        self.out.finish()
        return True  # keep the socket half open until the other side finishes too

    def pause_writing(self):
        self.into.set_blocked(True)

    def resume_writing(self):
        self.into.set_blocked(False)

    def connection_lost(self, exc):
        self.pair.lost(self)


class Pair:
    def __init__(self, proxy, name):
        self.proxy = proxy
        c = proxy.counters[name]
        self.up = Direction(proxy, self, proxy.up, c, "up_bytes")
        self.down = Direction(proxy, self, proxy.down, c, "down_bytes")
        self.sides = []
        c["connections"] += 1

    def ended(self):
        # Both ways finished (each side sent its end): close both sockets.
        if self.up.ended and self.down.ended:
            for side in self.sides:
                side.transport.close()

    def lost(self, side):
        # One socket closed: close the other once what it still has to carry is delivered.
        for other in self.sides:
            if other is not side and not other.transport.is_closing():
                d = other.into
                if d.queue:
                    d.eof = True
                    delay = max(0.0, d.queue[-1][0] - self.proxy.loop.time()) + 0.05
                    self.proxy.loop.call_later(delay, other.transport.close)
                else:
                    other.transport.close()


class Proxy:
    def __init__(self, args):
        self.loop = asyncio.get_running_loop()
        self.one_way = args.rtt_ms / 2000.0
        self.window = args.window
        self.up = Link(args.up_mbit)
        self.down = Link(args.down_mbit)
        self.counters = collections.defaultdict(lambda: collections.Counter())
        self.stats_path = args.stats
        self.started = time.time()

    async def serve(self, listen, target):
        name = f"{listen[0]}:{listen[1]}={target[0]}:{target[1]}"
        self.counters[name]["connections"] += 0

        def client_factory():
            pair = Pair(self, name)
            side = Side(pair, pair.up, pair.down)
            pair.sides.append(side)

            async def connect():
                try:
                    _, server_side = await self.loop.create_connection(
                        lambda: Side(pair, pair.down, pair.up), target[0], target[1])
                    pair.sides.append(server_side)
                except OSError as e:
                    print(f"delayproxy: {name}: cannot connect to the target: {e}", file=sys.stderr)
                    side.transport.close()
            self.loop.create_task(connect())
            return side

        return await self.loop.create_server(client_factory, listen[0], listen[1], reuse_address=True)

    def write_stats(self):
        report = {"seconds": round(time.time() - self.started, 3), "mappings": {k: dict(v) for k, v in self.counters.items()}}
        text = json.dumps(report, indent=1, sort_keys=True) + "\n"
        if self.stats_path:
            with open(self.stats_path + ".tmp", "w") as f:
                f.write(text)
            os.replace(self.stats_path + ".tmp", self.stats_path)
        else:
            sys.stderr.write(text)


async def main(args):
    proxy = Proxy(args)
    servers = []
    for listen, target in args.mappings:
        try:
            servers.append(await proxy.serve(listen, target))
        except OSError as e:
            sys.exit(f"delayproxy: cannot listen on {listen[0]}:{listen[1]}: {e}")
    stop = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        proxy.loop.add_signal_handler(s, stop.set)
    proxy.loop.add_signal_handler(signal.SIGUSR1, proxy.write_stats)
    print("ready", flush=True)
    await stop.wait()
    for s in servers:
        s.close()
    proxy.write_stats()


class Child:
    """This proxy run as a child process, for the benchmarks (tools/bench-*.py): `start`
    waits for its "ready" line; `stop` ends it and returns the bytes it carried towards
    the targets (the sum of every mapping's up_bytes)."""

    def __init__(self, stats_path):
        self.stats_path, self.proc = stats_path, None

    def start(self, mappings, rtt_ms=0, up_mbit=0):
        self.stop()
        argv = [sys.executable, os.path.abspath(__file__), "--rtt-ms", str(rtt_ms), "--stats", self.stats_path]
        if up_mbit:
            argv += ["--up-mbit", str(up_mbit)]
        import subprocess
        self.proc = subprocess.Popen(argv + list(mappings), stdout=subprocess.PIPE)
        if self.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("delayproxy did not start")

    def stop(self):
        if not self.proc or self.proc.poll() is not None:
            return 0
        self.proc.terminate()
        self.proc.wait(timeout=10)
        try:
            stats = json.load(open(self.stats_path))
        except (OSError, ValueError):
            return 0
        return sum(m.get("up_bytes", 0) for m in stats.get("mappings", {}).values())


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog=__doc__[__doc__.index("Examples:"):],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rtt-ms", type=float, default=0.0, help="round-trip time added (default 0)")
    p.add_argument("--up-mbit", type=float, default=0.0, help="bandwidth towards the targets, Mbit/s, shared (default: unlimited)")
    p.add_argument("--down-mbit", type=float, default=0.0, help="bandwidth from the targets, Mbit/s, shared (default: unlimited)")
    p.add_argument("--window", type=int, default=4 << 20, help="bytes in flight per connection and direction (default 4 MiB)")
    p.add_argument("--stats", help="write bytes carried (JSON) here on exit and on SIGUSR1")
    p.add_argument("mappings", nargs="+", type=mapping, metavar="LISTEN=TARGET")
    args = p.parse_args()
    if args.rtt_ms < 0 or args.up_mbit < 0 or args.down_mbit < 0 or args.window < 65536:
        p.error("--rtt-ms and bandwidths must be ≥ 0, --window ≥ 65536")
    asyncio.run(main(args))
