"""Tahoe-LAFS 1.20 behind the same delay proxies as grid (tools/bench-latency.py --tahoe).

A reference Tahoe grid (../shared/tahoe-ref/start-grid.sh: an introducer, N storage
nodes, a client with 3-of-7-of-10) whose storage nodes announce the ports of a delay
proxy in front of each (`tub.location`), so every byte between Tahoe's client and its
servers crosses the proxy as grid's do. Operations go through the client's web API (no
CLI start-up: Tahoe's own best case), timed as grid's are.
"""
import json
import os
import re
import statistics
import subprocess
import time
import urllib.request

import delayproxy

HERE = os.path.dirname(os.path.abspath(__file__))
REF = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "tahoe-ref"))


class TahoeBench:
    def __init__(self, root, servers, venv, base_port, free_port, log):
        self.dir = os.path.join(root, "tahoe")
        self.servers, self.base, self.free_port, self.log = servers, base_port, free_port, log
        self.env = dict(os.environ, TAHOE_VENV=venv, TAHOE_BASE_PORT=str(base_port))
        self.web = f"http://127.0.0.1:{base_port + 500}"
        self.proxy = delayproxy.Child(os.path.join(root, "tahoe-proxy.json"))
        self.mappings = []

    def script(self, name, *args):
        r = subprocess.run([os.path.join(REF, name), *args], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"tahoe-ref {name}: exit {r.returncode}: {r.stdout.decode(errors='replace')[-800:]}")

    def start(self):
        self.script("start-grid.sh", self.dir, str(self.servers))
        self.script("stop-grid.sh", self.dir)
        # Each storage node announces a proxy port instead of its own.
        for i in range(self.servers):
            cfg = os.path.join(self.dir, f"storage{i}", "tahoe.cfg")
            text = open(cfg).read()
            pport = self.free_port()
            text = re.sub(r"^tub\.location = .*$", f"tub.location = tcp:127.0.0.1:{pport}", text, flags=re.M)
            open(cfg, "w").write(text)
            self.mappings.append(f"127.0.0.1:{pport}=127.0.0.1:{self.base + 1 + i}")
        self.set_rtt(0, wait=False)
        self.script("start-grid.sh", self.dir, str(self.servers))

    def set_rtt(self, rtt, wait=True):
        self.proxy.start(self.mappings, rtt)
        if wait:
            self.wait_servers()

    def wait_servers(self):
        end = time.time() + 120
        while time.time() < end:
            try:
                d = json.load(urllib.request.urlopen(self.web + "/?t=json", timeout=5))
                n = sum(1 for s in d["servers"] if s["connection_status"].lower().startswith("connected"))
                if n >= self.servers:
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        raise RuntimeError("Tahoe's client did not reconnect to every server through the proxy")

    def stop_proxy(self):
        self.proxy.stop()

    def stop(self):
        self.stop_proxy()
        try:
            self.script("stop-grid.sh", self.dir)
        except (RuntimeError, subprocess.TimeoutExpired):
            pass

    def request(self, method, path, body=None, timeout=1800):
        t0 = time.monotonic()
        req = urllib.request.Request(self.web + path, data=body, method=method)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            out = r.read()
        return time.monotonic() - t0, out

    def put(self, data, path="/uri"):
        dt, out = self.request("PUT", path, data)
        return dt, out.decode().strip()

    def prepare(self, caps_for_dir=100):
        """A mutable file and a directory of `caps_for_dir` small files (at zero RTT)."""
        _, self.mcap = self.put(os.urandom(1024), "/uri?format=MDMF")
        _, self.dircap = self.request("POST", "/uri?t=mkdir")
        self.dircap = self.dircap.decode().strip()
        for i in range(caps_for_dir):
            _, cap = self.put(os.urandom(200) + str(i).encode())
            self.request("PUT", f"/uri/{self.dircap}/f{i:03}?t=uri", cap.encode())

    def measure(self, reps, big_mib, big_reps, scratch):
        r = {}
        t = []
        for _ in range(reps):
            dt, cap1 = self.put(os.urandom(1 << 20))
            t.append(dt)
        r["upload_1mib_s"] = statistics.median(t)
        r["download_1mib_s"] = statistics.median([self.request("GET", f"/uri/{cap1}")[0] for _ in range(reps)])
        r["mutable_update_1kib_s"] = statistics.median([self.put(os.urandom(1024), f"/uri/{self.mcap}")[0] for _ in range(reps)])
        r["mutable_read_1kib_s"] = statistics.median([self.request("GET", f"/uri/{self.mcap}")[0] for _ in range(reps)])
        r["ls_100_s"] = statistics.median([self.request("GET", f"/uri/{self.dircap}?t=json")[0] for _ in range(reps)])
        ups, downs = [], []
        for _ in range(big_reps):
            big = os.path.join(scratch, "tahoe-big.bin")
            with open(big, "wb") as f:
                for _ in range(big_mib):
                    f.write(os.urandom(1 << 20))
            data = open(big, "rb").read()
            os.unlink(big)
            dt, capb = self.put(data)
            ups.append(dt)
            del data
            downs.append(self.request("GET", f"/uri/{capb}")[0])
        r["upload_big_mb_s"] = (big_mib << 20) / statistics.median(ups) / 1e6
        r["download_big_mb_s"] = (big_mib << 20) / statistics.median(downs) / 1e6
        return r
