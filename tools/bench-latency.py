#!/usr/bin/env python3
"""bench-latency: grid's transfers over real network latency, through tools/delayproxy.py.

    tools/bench-latency.py [--rtt 0,20,80] [--reps 5] [--big-mib 128] [--files 1000] [--steady]
                           [--servers 10] [--up-mbit 0] [--json FILE] [--grid-bin PATH]

Starts an introducer and --servers storage servers on 127.0.0.1 whose announced
location is a port of one delay proxy in front of each, so every byte between the client
and a server crosses the proxy (the introducer is reached directly). For each round-trip
time (the proxy is restarted on the same ports with it) it times, as a user runs them:
1 MiB upload (a new file each time) and download, --big-mib upload and download to a
file, a 1 KiB mutable update and read, `grid ls` of a 100-entry directory, and
`grid maintain` (census and lease renewal, no verification) of --files small files
uploaded beforehand. Prints a table of medians and each figure's ratio to the same
figure at the first RTT; the round trip the client measured (`grid status`) is printed
too. With --steady, files of twice --big-mib are moved as well: the extra bytes over
the extra time is the steady rate (what the windows sustain), and what is left of the
--big-mib time is the fixed cost (connecting, census, the first and last round trips).
With --tahoe, Tahoe-LAFS 1.20 (../shared/tahoe-ref, $TAHOE_VENV) runs the same
operations through its web API behind its own proxies at each RTT, in the same run.
Needs python3 only (no root).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import delayproxy  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg):
    sys.stderr.write(time.strftime("%H:%M:%S ") + msg + "\n")
    sys.stderr.flush()


class Bench:
    def __init__(self, args, root):
        self.args, self.root, self.grid = args, root, args.grid_bin
        self.env = dict(os.environ, GRID_NODE_DIR=os.path.join(root, "client"))
        self.daemons = []
        self.proxy = delayproxy.Child(os.path.join(root, "proxy-stats.json"))

    def run(self, argv, stdin=None, check=True, timeout=900):
        t0 = time.monotonic()
        r = subprocess.run([self.grid] + argv, env=self.env, input=stdin, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
        dt = time.monotonic() - t0
        if check and r.returncode != 0:
            raise RuntimeError(f"grid {' '.join(argv[:3])}: exit {r.returncode}: {r.stderr.decode(errors='replace').strip()}")
        return dt, r.stdout.decode(errors="replace")

    def start(self):
        a = self.args
        intro = os.path.join(self.root, "introducer")
        port = free_port()
        _, out = self.run(["introducer", "create", intro, "--port", str(port)])
        furl = out.strip().splitlines()[-1]
        self.daemons.append(subprocess.Popen([self.grid, "introducer", "run", intro], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.mappings = []
        for i in range(a.servers):
            d = os.path.join(self.root, f"s{i}")
            sport, pport = free_port(), free_port()
            self.run(["storage", "create", d, "--introducer", furl, "--port", str(sport),
                      "--location", f"127.0.0.1:{pport}", "--nickname", f"s{i}", "--reserved-space", "0"])
            self.daemons.append(subprocess.Popen([self.grid, "storage", "run", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            self.mappings.append(f"127.0.0.1:{pport}=127.0.0.1:{sport}")
        self.run(["client", "create", self.env["GRID_NODE_DIR"], "--introducer", furl])

    def set_rtt(self, rtt):
        self.proxy.start(self.mappings, rtt, self.args.up_mbit)

    def stop_proxy(self):
        self.proxy.stop()

    def stop(self):
        self.stop_proxy()
        for p in self.daemons:
            p.terminate()
        for p in self.daemons:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    def file(self, name, size):
        path = os.path.join(self.root, name)
        with open(path, "wb") as f:
            left = size
            while left:
                n = min(left, 1 << 20)
                f.write(os.urandom(n))
                left -= n
        return path

    def big_rounds(self, size, reps):
        """Upload a new file of `size` bytes and download it to a file, `reps` times: the times."""
        ups, downs = [], []
        out_path = os.path.join(self.root, "big.out")
        for _ in range(reps):
            big = self.file("big.bin", size)
            dt, out = self.run(["upload", big])
            ups.append(dt)
            os.unlink(big)
            downs.append(self.run(["download", out.strip().splitlines()[-1], "-o", out_path])[0])
            os.unlink(out_path)
        return ups, downs

    def wait_servers(self):
        end = time.time() + 60
        while time.time() < end:
            _, out = self.run(["status", "--json"], check=False)
            try:
                rows = json.loads(out)["servers"]
                if sum(1 for r in rows if r.get("connected")) >= self.args.servers:
                    return rows
            except (ValueError, KeyError):
                pass
            time.sleep(0.5)
        raise RuntimeError("the servers did not all become reachable through the proxies")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rtt", default="0,20,80", help="round-trip times in ms, comma-separated")
    ap.add_argument("--reps", type=int, default=5, help="repetitions of each small operation (medians)")
    ap.add_argument("--big-mib", type=int, default=128)
    ap.add_argument("--big-reps", type=int, default=2)
    ap.add_argument("--files", type=int, default=1000, help="files in the maintain census")
    ap.add_argument("--steady", action="store_true",
                    help="also move files of twice --big-mib: the extra bytes over the extra time is the steady rate, "
                         "without the fixed round trips of connecting, census and close")
    ap.add_argument("--servers", type=int, default=10)
    ap.add_argument("--up-mbit", type=float, default=0, help="limit the client's uplink (Mbit/s, shared by all servers)")
    ap.add_argument("--tahoe", action="store_true",
                    help="also time Tahoe-LAFS 1.20 (../shared/tahoe-ref, $TAHOE_VENV) behind the same proxies, in the same run")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--grid-bin", default=os.environ.get("GRID_BIN", os.path.join(HERE, "..", ".build", "release", "grid")))
    args = ap.parse_args()
    rtts = [float(x) for x in args.rtt.split(",")]
    root = tempfile.mkdtemp(prefix="bench-latency.")
    b = Bench(args, root)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    results = {}
    tahoe_results = {}
    tb = None
    try:
        if args.tahoe:
            import tahoe_latency
            venv = os.environ.get("TAHOE_VENV", "/work/.venv-tahoe")
            tb = tahoe_latency.TahoeBench(root, args.servers, venv, int(os.environ.get("TAHOE_BASE_PORT", "47100")), free_port, log)
            log("starting Tahoe's reference grid behind its own proxies")
            tb.start()
            tb.prepare()
            tb.stop_proxy()
        b.start()
        b.set_rtt(0)
        b.wait_servers()
        # Set-up at zero RTT: the census files, a directory of 100 entries, a mutable file.
        log(f"uploading {args.files} files for the census")
        caps = []
        for i in range(args.files):
            _, out = b.run(["upload", "-"], stdin=os.urandom(200) + str(i).encode())
            caps.append(out.strip().splitlines()[-1])
        manifest = os.path.join(root, "manifest")
        open(manifest, "w").write("\n".join(caps) + "\n")
        b.run(["create-alias", "tahoe"])
        entries = min(100, len(caps))
        for i in range(entries):
            b.run(["ln", caps[i], f"tahoe:dir/f{i:03}"])
        one = b.file("one.bin", 1 << 20)
        _, out = b.run(["upload", "--mutable", "-"], stdin=os.urandom(1024))
        mcap = out.strip().splitlines()[-1]
        for rtt in rtts:
            b.set_rtt(rtt)
            rows = b.wait_servers()
            measured = statistics.median(r["rtt_ms"] for r in rows if r.get("rtt_ms") is not None)
            log(f"RTT {rtt:g} ms (measured by grid status: {measured:.1f} ms)")
            r = results[rtt] = {"measured_rtt_ms": measured}
            t = []
            for i in range(args.reps):
                f = b.file("up1.bin", 1 << 20)
                dt, out = b.run(["upload", f])
                t.append(dt)
            cap1 = out.strip().splitlines()[-1]
            r["upload_1mib_s"] = statistics.median(t)
            r["download_1mib_s"] = statistics.median([b.run(["download", cap1, "-o", os.path.join(root, "o1")])[0] for _ in range(args.reps)])
            r["mutable_update_1kib_s"] = statistics.median([b.run(["update", mcap, "-"], stdin=os.urandom(1024))[0] for _ in range(args.reps)])
            r["mutable_read_1kib_s"] = statistics.median([b.run(["download", mcap])[0] for _ in range(args.reps)])
            r["ls_100_s"] = statistics.median([b.run(["ls", "tahoe:dir"])[0] for _ in range(args.reps)])
            r["maintain_census_s"] = statistics.median([b.run(["maintain", "--manifest", manifest, "--no-catalog", "--no-aliases", "--verify-period", "0", "--no-repair"], check=False)[0] for _ in range(max(1, args.reps // 2))])
            ups, downs = b.big_rounds(args.big_mib << 20, args.big_reps)
            r["upload_big_mb_s"] = (args.big_mib << 20) / statistics.median(ups) / 1e6
            r["download_big_mb_s"] = (args.big_mib << 20) / statistics.median(downs) / 1e6
            if args.steady:
                ups2, downs2 = b.big_rounds(2 * args.big_mib << 20, args.big_reps)
                extra = args.big_mib << 20
                r["upload_steady_mb_s"] = extra / max(1e-9, statistics.median(ups2) - statistics.median(ups)) / 1e6
                r["download_steady_mb_s"] = extra / max(1e-9, statistics.median(downs2) - statistics.median(downs)) / 1e6
                r["upload_fixed_s"] = statistics.median(ups) - extra / (r["upload_steady_mb_s"] * 1e6)
                r["download_fixed_s"] = statistics.median(downs) - extra / (r["download_steady_mb_s"] * 1e6)
            log(json.dumps(r))
            if tb:
                # Tahoe at the same RTT, grid's proxy stopped meanwhile.
                b.stop_proxy()
                tb.set_rtt(rtt)
                tahoe_results[rtt] = tb.measure(args.reps, args.big_mib, args.big_reps, root)
                tb.stop_proxy()
                log("tahoe " + json.dumps(tahoe_results[rtt]))
    except (RuntimeError, subprocess.TimeoutExpired, KeyboardInterrupt) as e:
        print(f"bench-latency: {e}; files kept in {root}", file=sys.stderr)
        return 2
    finally:
        b.stop()
        if tb:
            tb.stop()
    shutil.rmtree(root, ignore_errors=True)
    base = results[rtts[0]]
    names = [("upload_1mib_s", "1 MiB upload, s"), ("download_1mib_s", "1 MiB download, s"),
             ("mutable_update_1kib_s", "1 KiB mutable update, s"), ("mutable_read_1kib_s", "1 KiB mutable read, s"),
             ("ls_100_s", "ls of a 100-entry directory, s"), ("maintain_census_s", f"maintain census of {args.files} files, s"),
             ("upload_big_mb_s", f"{args.big_mib} MiB upload, MB/s"), ("download_big_mb_s", f"{args.big_mib} MiB download, MB/s")]
    if args.steady:
        names += [("upload_steady_mb_s", f"upload steady rate ({2 * args.big_mib} vs {args.big_mib} MiB), MB/s"),
                  ("download_steady_mb_s", f"download steady rate ({2 * args.big_mib} vs {args.big_mib} MiB), MB/s"),
                  ("upload_fixed_s", "upload fixed cost (time beyond the steady rate), s"),
                  ("download_fixed_s", "download fixed cost (time beyond the steady rate), s")]
    print(f"grid over added round-trip time ({args.servers} servers, each behind a delay proxy; medians of {args.reps}, {args.big_reps} for the large file)")
    print("| figure | " + " | ".join(f"RTT {r:g} ms" for r in rtts) + " |")
    print("|---|" + "---|" * len(rtts))
    print("| RTT measured by `grid status`, ms | " + " | ".join(f"{results[r]['measured_rtt_ms']:.1f}" for r in rtts) + " |")
    for key, label in names:
        cells = []
        for r in rtts:
            v = results[r][key]
            cells.append(f"{v:.1f}" if key.endswith("_mb_s") else f"{v:.3f}")
            if r != rtts[0]:
                cells[-1] += f" ({v / base[key]:.2f}x)"
        print(f"| {label} | " + " | ".join(cells) + " |")
    if tahoe_results:
        print()
        print("Tahoe-LAFS 1.20 behind the same proxies, same run (its web API on a running client: no start-up, connections open);"
              " in brackets grid's speed-up (Tahoe's time / grid's, or grid's MB/s / Tahoe's)")
        print("| figure | " + " | ".join(f"RTT {r:g} ms" for r in rtts) + " |")
        print("|---|" + "---|" * len(rtts))
        for key, label in names:
            if key not in tahoe_results[rtts[0]]:
                continue
            cells = []
            for r in rtts:
                v, g = tahoe_results[r][key], results[r][key]
                rate = key.endswith("_mb_s")
                ratio = g / v if rate else v / g
                cells.append((f"{v:.1f}" if rate else f"{v:.3f}") + f" ({ratio:.2f}x)")
            print(f"| {label} | " + " | ".join(cells) + " |")
    if args.json:
        json.dump({"rtts": rtts, "results": {str(k): v for k, v in results.items()},
                   "tahoe": {str(k): v for k, v in tahoe_results.items()}}, open(args.json, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
