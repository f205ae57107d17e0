#!/usr/bin/env python3
"""bench-helper: an upload over a slow uplink, directly and through `grid helper`.

    tools/bench-helper.py [--up-mbit 10] [--rtt 20] [--mib 8] [--reps 2] [--servers 10]
                          [--json FILE] [--grid-bin PATH]

Starts an introducer, --servers storage servers and an upload helper on 127.0.0.1, and
two client nodes (3-of-10, happy 7): one uploading directly, one with `[client] helper`.
Every byte from a client crosses a delay proxy (tools/delayproxy.py) that is its uplink:
--up-mbit shared by all its connections, --rtt round trip. Directly, the client's
connections to the servers cross it (n/k times the file); through the helper, only its
connection to the helper does, and the helper reaches the servers through a proxy with
no limit (a helper sits near the servers). For each way it uploads --reps new files of
--mib MiB and prints the median time and the bytes the uplink carried (counted by the
proxy, and as the client reports them); then the helper's answer for a file stored
already. Needs python3 only (no root).
"""
import argparse
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("bench_latency", os.path.join(HERE, "bench-latency.py"))
bl = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bl)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--up-mbit", type=float, default=10)
    ap.add_argument("--rtt", type=float, default=20)
    ap.add_argument("--mib", type=int, default=8)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--servers", type=int, default=10)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--grid-bin", default=os.environ.get("GRID_BIN", os.path.join(HERE, "..", ".build", "release", "grid")))
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="bench-helper.")
    # bench-latency's grid: servers announce ports of a proxy in front of each.
    largs = argparse.Namespace(servers=args.servers, up_mbit=0, grid_bin=args.grid_bin)
    b = bl.Bench(largs, root)
    servers_proxy = bl.delayproxy.Child(os.path.join(root, "proxy-servers.json"))
    helper_proxy = bl.delayproxy.Child(os.path.join(root, "proxy-helper.json"))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    results = {}
    try:
        b.start()
        furl = open(os.path.join(root, "introducer", "private", "introducer.address")).read().strip()
        hport, hproxy = bl.free_port(), bl.free_port()
        hdir = os.path.join(root, "helper")
        _, out = b.run(["helper", "create", hdir, "--introducer", furl, "--port", str(hport), "--location", f"127.0.0.1:{hproxy}"])
        haddr = out.strip().splitlines()[-1]
        b.daemons.append(subprocess.Popen([b.grid, "helper", "run", hdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        hnode = os.path.join(root, "client-helper")
        b.run(["client", "create", hnode, "--introducer", furl, "--helper", haddr])
        henv = dict(b.env, GRID_NODE_DIR=hnode)
        servers_proxy.start(b.mappings, 0, 0)
        b.wait_servers()

        def upload(env, path):
            t0 = time.monotonic()
            r = subprocess.run([b.grid, "upload", "--json", path], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=3600)
            dt = time.monotonic() - t0
            if r.returncode != 0:
                raise RuntimeError(f"upload: exit {r.returncode}: {r.stderr.decode(errors='replace').strip()}")
            return dt, json.loads(r.stdout)

        size = args.mib << 20
        for way in ("direct", "helper"):
            times, carried, reported = [], [], []
            for i in range(args.reps):
                f = b.file(f"{way}{i}.bin", size)
                if way == "direct":
                    servers_proxy.start(b.mappings, args.rtt, args.up_mbit)
                    b.wait_servers()
                    dt, r = upload(b.env, f)
                    carried.append(servers_proxy.stop())
                    servers_proxy.start(b.mappings, 0, 0)
                else:
                    helper_proxy.start([f"127.0.0.1:{hproxy}=127.0.0.1:{hport}"], args.rtt, args.up_mbit)
                    dt, r = upload(henv, f)
                    carried.append(helper_proxy.stop())
                    if r.get("helper") is None:
                        raise RuntimeError(f"the helper was not used: {r.get('helper_problem')}")
                times.append(dt)
                reported.append(r["bytes_sent"])
                bl.log(f"{way} {i}: {dt:.2f} s, uplink carried {carried[-1]} bytes, client reports {r['bytes_sent']}")
            results[way] = {"seconds": statistics.median(times), "uplink_bytes": statistics.median(carried),
                            "client_bytes_sent": statistics.median(reported)}
        # A file stored already, through the helper: only the start call and the local hashing.
        helper_proxy.start([f"127.0.0.1:{hproxy}=127.0.0.1:{hport}"], args.rtt, args.up_mbit)
        dt, r = upload(henv, os.path.join(root, "helper0.bin"))
        results["helper_stored_already"] = {"seconds": dt, "uplink_bytes": helper_proxy.stop(), "client_bytes_sent": r["bytes_sent"]}
    finally:
        servers_proxy.stop()
        helper_proxy.stop()
        b.stop()
    d, h = results["direct"], results["helper"]
    print(f"upload of {args.mib} MiB, 3-of-10, over a {args.up_mbit:g} Mbit/s uplink with {args.rtt:g} ms RTT "
          f"(medians of {args.reps}; uplink bytes counted by the proxy)")
    print(f"{'':28}{'seconds':>10}{'uplink bytes':>16}{'x file size':>13}")
    for name, key in (("direct to the servers", "direct"), ("through the helper", "helper"),
                      ("helper, stored already", "helper_stored_already")):
        x = results[key]
        print(f"{name:28}{x['seconds']:10.2f}{int(x['uplink_bytes']):16d}{x['uplink_bytes'] / size:13.2f}")
    print(f"helper vs direct: {h['seconds'] / d['seconds']:.2f}x the time, {h['uplink_bytes'] / max(1, d['uplink_bytes']):.2f}x the uplink bytes")
    if args.json:
        json.dump({"mib": args.mib, "up_mbit": args.up_mbit, "rtt_ms": args.rtt, "results": results}, open(args.json, "w"), indent=1)
    subprocess.run(["rm", "-rf", root])


if __name__ == "__main__":
    main()
