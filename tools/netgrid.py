#!/usr/bin/env python3
"""netgrid: a grid across real hosts on one machine, a concurrent workload under faults,
and a checker of what the clients were told.

Hosts are Linux network namespaces (one per daemon or client) joined by veth pairs to a
bridge that lives in its own "switch" namespace, with addresses from 198.18.0.0/24 (the
benchmarking range, RFC 2544) that exist only inside those namespaces. Nothing outside
the namespaces is changed: no link, route, rule or address of the machine itself. Every
namespace, mount and process made is removed at the end (also on SIGINT/SIGTERM and when
the run's time bound fires).

  netgrid.py run  [--seconds 60] [--seed N] [--json FILE] [--keep] [--grid-bin PATH]
  netgrid.py soak --minutes N [--seed N] [...]
  netgrid.py clean        # remove namespaces left by a run that was killed -9

Exit status: 0 nothing lost or wrong; 1 something lost or wrong (the report says what);
2 the harness itself failed (setup, a stall); 77 namespaces cannot be made here (skip).
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

# The exit statuses `grid --help` documents; a failed operation must use one of them.
DOCUMENTED_EXIT = {64, 65, 66, 69, 70, 73, 74, 75, 76, 77}
NET = "198.18.0."
STORAGE_PORT = 4001
INTRO_PORT = 4000
N_SERVERS = 10
N_CLIENTS = 3
OP_TIMEOUT = 180.0            # an operation running longer than this is a stall (a bug)
REGION = 64                   # bytes of one writer's region in a shared mutable file
MDMF_STRIDE = 200_000         # writers' regions in different MDMF segments
SIZES = [40, 3_000, 70_000, 600_000, 2_500_000]   # LIT, one segment, several segments
# Uploads keep the servers' disks at most this full (share bytes sent, n/k = 10/3 of each
# file): past it only the small sizes are uploaded, so a long soak does not leave every
# disk full (only the diskfull fault fills one, for a while) and the final maintain run
# has room to repair.
DISK_BUDGET = 0.4

def log(msg):
    sys.stderr.write(time.strftime("%H:%M:%S ") + msg + "\n")
    sys.stderr.flush()

def sh(*argv, check=True, timeout=60):
    r = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.decode(errors='replace').strip()}")
    return r

# --------------------------------------------------------------------------- network

class Net:
    """The namespaces, the switch and the links; the faults on them."""

    def __init__(self, tag):
        self.tag = tag
        self.sw = f"{tag}-sw"
        self.hosts = {}        # name -> (namespace, address, switch port)
        self.made = []

    def ns(self, name):
        return self.hosts[name][0]

    def addr(self, name):
        return self.hosts[name][1]

    def create(self, names_and_octets):
        sh("ip", "netns", "add", self.sw)
        self.made.append(self.sw)
        sh("ip", "-n", self.sw, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.sw, "link", "set", "br0", "up")
        for i, (name, octet) in enumerate(names_and_octets):
            ns = f"{self.tag}-{name}"
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            port = f"p{i}"
            # Both ends are made inside namespaces: the switch's and the host's.
            sh("ip", "-n", self.sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", self.sw, "link", "set", port, "master", "br0")
            sh("ip", "-n", self.sw, "link", "set", port, "up")
            sh("ip", "-n", ns, "addr", "add", f"{NET}{octet}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            self.hosts[name] = (ns, f"{NET}{octet}", port)

    def link(self, name, up):
        sh("ip", "-n", self.sw, "link", "set", self.hosts[name][2], "up" if up else "down")

    def block(self, name, peers, inbound=True, outbound=True):
        """Drop packets between host `name` and `peers` (nftables in name's namespace)."""
        ns = self.ns(name)
        sh("ip", "netns", "exec", ns, "nft", "add", "table", "inet", "netgrid")
        sh("ip", "netns", "exec", ns, "nft", "add", "chain", "inet", "netgrid", "out",
           "{ type filter hook output priority 0 ; }")
        sh("ip", "netns", "exec", ns, "nft", "add", "chain", "inet", "netgrid", "in",
           "{ type filter hook input priority 0 ; }")
        for p in peers:
            if outbound:
                sh("ip", "netns", "exec", ns, "nft", "add", "rule", "inet", "netgrid", "out", "ip", "daddr", self.addr(p), "drop")
            if inbound:
                sh("ip", "netns", "exec", ns, "nft", "add", "rule", "inet", "netgrid", "in", "ip", "saddr", self.addr(p), "drop")

    def unblock(self, name):
        sh("ip", "netns", "exec", self.ns(name), "nft", "delete", "table", "inet", "netgrid", check=False)

    def destroy(self):
        for ns in reversed(self.made):
            sh("ip", "netns", "del", ns, check=False)
        self.made = []

def can_make_namespaces():
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None:
        return "no ip (iproute2)"
    probe = f"ngprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        return "ip netns add failed: " + r.stderr.decode(errors="replace").strip()
    subprocess.run(["ip", "netns", "del", probe])
    return None

# --------------------------------------------------------------------------- daemons

class Daemon:
    def __init__(self, grid, name, host, directory, args):
        self.grid, self.name, self.host, self.dir, self.args = grid, name, host, directory, args
        self.proc = None
        self.frozen = False
        self.skew = None

    def start(self, skew_hours=None):
        env = dict(os.environ)
        env.pop("GRID_CLOCK_OFFSET", None)
        self.skew = skew_hours
        if skew_hours:
            # grid's own wall-clock reads shift; its monotonic clock (timeouts, timers)
            # does not, as on a host whose clock is set wrong. (libfaketime, used before,
            # also shifted timed waits: the skewed servers' timers never fired.)
            env["GRID_CLOCK_OFFSET"] = str(skew_hours * 3600)
        logf = open(os.path.join(self.grid.root, "logs", self.name + ".log"), "ab")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.grid.net.ns(self.host), self.grid.bin] + self.args,
                                     stdout=logf, stderr=logf, env=env, start_new_session=True)
        logf.close()
        self.frozen = False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def kill9(self):
        if self.alive():
            if self.frozen:
                os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.frozen = False

    def stop(self):
        if not self.alive():
            return
        if self.frozen:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.frozen = False
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill9()

# --------------------------------------------------------------------------- the grid

class Grid:
    def __init__(self, args, root):
        self.args = args
        self.root = root
        self.bin = args.grid_bin
        self.tag = "ng%04x" % (os.getpid() & 0xFFFF)
        self.net = Net(self.tag)
        self.introducer = None
        self.servers = []
        self.clients = []        # (name, node dir)
        self.mounts = []
        self.skew_ok = True
        self.nft_ok = shutil.which("nft") is not None

    def cmd(self, client, argv, timeout=OP_TIMEOUT, stdin=None):
        """Runs `grid ARGV` on a client host; returns (rc, stdout, stderr, popen)."""
        name, node = client
        env = dict(os.environ, GRID_NODE_DIR=node)
        p = subprocess.Popen(["ip", "netns", "exec", self.net.ns(name), self.bin] + argv,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
                             start_new_session=True)
        return p

    def run(self, client, argv, timeout=120):
        p = self.cmd(client, argv)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise RuntimeError(f"grid {' '.join(argv)} on {client[0]} did not finish in {timeout} s")
        return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    def must(self, client, argv, timeout=120):
        rc, out, err = self.run(client, argv, timeout)
        if rc != 0:
            raise RuntimeError(f"grid {' '.join(argv)} on {client[0]}: exit {rc}: {err.strip()}")
        return out

    def setup(self):
        hosts = [("intro", 2)] + [(f"s{i}", 10 + i) for i in range(1, N_SERVERS + 1)] + \
                [(f"c{i}", 30 + i) for i in range(1, N_CLIENTS + 1)]
        self.net.create(hosts)
        os.makedirs(os.path.join(self.root, "logs"))
        d = os.path.join(self.root, "intro")
        sh(self.bin, "introducer", "create", d, "--listen", "0.0.0.0", "--port", str(INTRO_PORT),
           "--location", f"{self.net.addr('intro')}:{INTRO_PORT}")
        self.intro_address = open(os.path.join(d, "private", "introducer.address")).read().strip()
        self.introducer = Daemon(self, "introducer", "intro", d, ["introducer", "run", d])
        for i in range(1, N_SERVERS + 1):
            name = f"s{i}"
            d = os.path.join(self.root, name)
            os.makedirs(d)
            # Each server's disk is its own small filesystem, so "disk full" is real ENOSPC.
            sh("mount", "-t", "tmpfs", "-o", f"size={self.args.disk_mib}m,mode=0700", "netgrid", d)
            self.mounts.append(d)
            nd = os.path.join(d, "node")
            loc = f"{self.net.addr(name)}:{STORAGE_PORT}"
            if i == 1:
                # Several addresses, tried in order: 127.0.0.1 is this server's own loopback,
                # refused at once on every other host, so clients go on to the second.
                loc = f"127.0.0.1:{STORAGE_PORT},{loc}"
            sh(self.bin, "storage", "create", nd, "--introducer", self.intro_address, "--nickname", name,
               "--listen", "0.0.0.0", "--port", str(STORAGE_PORT), "--location", loc, "--reserved-space", "0")
            conf = os.path.join(nd, "grid.conf")
            text = open(conf).read()
            # Expiry on, checked often, so a wrong clock would show quickly if it destroyed shares.
            text = text.replace("expire = false", "expire = true").replace("expire_interval = 1h", "expire_interval = 5s")
            text = text.replace("announce_interval = 60s", "announce_interval = 5s")
            open(conf, "w").write(text)
            self.servers.append(Daemon(self, name, name, nd, ["storage", "run", nd]))
        for i in range(1, N_CLIENTS + 1):
            name = f"c{i}"
            d = os.path.join(self.root, name)
            sh(self.bin, "client", "create", d, "--introducer", self.intro_address, "--nickname", name)
            self.clients.append((name, d))
        self.introducer.start()
        # Two servers run with their clocks hours off for the whole run.
        for s in self.servers:
            skew = None
            if self.skew_ok and s.name == "s9":
                skew = 7
            if self.skew_ok and s.name == "s10":
                skew = -7
            s.start(skew)
        # Every client must see every server (and so has them in its cache for later).
        deadline = time.time() + 90
        for c in self.clients:
            while True:
                rc, out, err = self.run(c, ["status", "--json"], timeout=60)
                try:
                    st = json.loads(out)
                    up = [s for s in st["servers"] if s.get("connected")]
                except (ValueError, KeyError):
                    up = []
                if len(up) == N_SERVERS:
                    self.status = st
                    break
                if time.time() > deadline:
                    raise RuntimeError(f"{c[0]} sees {len(up)} of {N_SERVERS} servers after 90 s: {err.strip()}")
                time.sleep(1)
        s1 = [s for s in self.status["servers"] if s["nickname"] == "s1"][0]
        self.location_check = {"s1_announced": s1["addresses"], "reached_from": [c[0] for c in self.clients]}

    def heal_daemons(self):
        if not self.introducer.alive():
            self.introducer.start()
        for s in self.servers:
            if s.frozen:
                s.signal(signal.SIGCONT)
                s.frozen = False
            if not s.alive():
                s.start(s.skew if s.name in ("s9", "s10") else None)

    def teardown(self):
        for s in self.servers + ([self.introducer] if self.introducer else []):
            try:
                s.stop()
            except Exception:
                pass
        for d in reversed(self.mounts):
            subprocess.run(["umount", "-l", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.mounts = []
        self.net.destroy()

# --------------------------------------------------------------------------- the record

class Record:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = []

    def add(self, op):
        with self.lock:
            self.ops.append(op)

def token(writer, seq):
    t = f"{writer}:{seq:08d}:".encode()
    return t + b"." * (REGION - len(t))

INIT = token("init", 0)

def token_seq(chunk, writer):
    if chunk == INIT:
        return 0
    try:
        w, seq, _ = chunk.decode().split(":", 2)
    except (UnicodeDecodeError, ValueError):
        return None
    if w != writer or chunk != token(writer, int(seq)):
        return None
    return int(seq)

# --------------------------------------------------------------------------- workload

class Workload:
    def __init__(self, grid, seed, seconds):
        self.g = grid
        self.seed = seed
        self.seconds = seconds
        self.rec = Record()
        self.lock = threading.Lock()
        self.files = []             # acknowledged uploads: (cap, sha256, size, path)
        self.names = {}             # directory name -> dict(cap, state: present|claimed)
        self.current = {}           # client name -> (Popen, op) running now
        self.wholeseq = 0
        self.stalls = 0
        self.writers = [c[0] for c in grid.clients]
        self.share_bytes = 0        # bytes of shares sent by uploads so far (estimated)
        self.budget = DISK_BUDGET * N_SERVERS * grid.args.disk_mib * (1 << 20)
        self.data = os.path.join(grid.root, "data")
        os.makedirs(self.data)

    def prepare(self):
        c1 = self.g.clients[0]
        self.g.must(c1, ["create-alias", "shared"])
        aliases = json.loads(self.g.must(c1, ["list-aliases", "--json"]))
        self.dircap = aliases["shared"]["readwrite"]
        for c in self.g.clients[1:]:
            self.g.must(c, ["add-alias", "shared", self.dircap])
        self.mutables = {}
        for label, fmt, stride in (("M", "mdmf", MDMF_STRIDE), ("S", "sdmf", REGION)):
            size = stride * (len(self.writers) - 1) + REGION
            body = bytearray(b"-" * size)
            for i in range(len(self.writers)):
                body[i * stride:i * stride + REGION] = INIT
            path = os.path.join(self.data, f"init-{label}")
            open(path, "wb").write(body)
            cap = self.g.must(c1, ["upload", path, "--mutable", "--format", fmt]).strip().splitlines()[-1]
            self.mutables[label] = dict(cap=cap, stride=stride, fmt=fmt, size=size)
        # W: replaced whole by every writer in turn.
        body = self.whole_body("init", 0)
        path = os.path.join(self.data, "init-W")
        open(path, "wb").write(body)
        cap = self.g.must(c1, ["upload", path, "--mutable", "--format", "sdmf"]).strip().splitlines()[-1]
        self.whole = dict(cap=cap, versions={hashlib.sha256(body).hexdigest(): ("init", 0)})
        self.rec.add(dict(client="c1", op="whole", seq=0, writer="init", digest=hashlib.sha256(body).hexdigest(),
                          start=0.0, end=0.0, outcome="ack"))
        self.t0 = time.time()

    def whole_body(self, writer, seq):
        r = random.Random(f"{self.seed}-{writer}-{seq}")
        n = r.choice([100, 5_000, 40_000])
        return f"{writer}:{seq}\n".encode() + bytes(r.getrandbits(8) for _ in range(n))

    def timed(self, client, argv, op, killable):
        """Runs one grid command for `op`: its start, end and exit status; a command over
        OP_TIMEOUT is killed and counted as a stall. A killable one is what client-kill hits."""
        op["start"] = time.time() - self.t0
        p = self.g.cmd(client, argv)
        if killable:
            with self.lock:
                self.current[client[0]] = (p, op)
        try:
            out, err = p.communicate(timeout=OP_TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            op["stalled"] = True
            with self.lock:
                self.stalls += 1
        if killable:
            with self.lock:
                self.current.pop(client[0], None)
        op["end"] = time.time() - self.t0
        op["rc"] = p.returncode
        return out, err

    def execute(self, client, argv, op):
        out, err = self.timed(client, argv, op, killable=True)
        rc = op["rc"]
        err = err.decode(errors="replace")
        if op.get("killed") or op.get("stalled") or rc < 0:
            op["outcome"] = "unknown"
        elif rc == 0:
            op["outcome"] = "ack"
        else:
            op["outcome"] = "fail"
            lines = [l for l in err.splitlines() if l.strip()]
            op["error"] = lines[-1] if lines else ""
            # A failure says so: a documented status and one line.
            op["clear"] = rc in DOCUMENTED_EXIT and len(lines) == 1 and lines[0].startswith("grid: error: ")
        self.rec.add(op)
        return out

    def client_loop(self, idx, deadline):
        client = self.g.clients[idx]
        me = client[0]
        r = random.Random(f"{self.seed}-client-{idx}")
        seq = {"M": 0, "S": 0}
        n = 0
        while time.time() < deadline:
            n += 1
            x = r.random()
            if x < 0.28:
                size = r.choice(SIZES)
                with self.lock:
                    if self.share_bytes > self.budget:
                        size = r.choice([z for z in SIZES if z <= 70_000])
                    self.share_bytes += size * 10 // 3
                path = os.path.join(self.data, f"{me}-{n}")
                blob = random.Random(f"{self.seed}-{me}-{n}").randbytes(size)
                open(path, "wb").write(blob)
                op = dict(client=me, op="upload", size=size, path=path, digest=hashlib.sha256(blob).hexdigest())
                out = self.execute(client, ["upload", path], op)
                if op["outcome"] == "ack":
                    op["cap"] = out.decode().strip().splitlines()[-1]
                    with self.lock:
                        self.files.append((op["cap"], op["digest"], size, path))
            elif x < 0.45:
                with self.lock:
                    f = r.choice(self.files) if self.files else None
                if f is None:
                    continue
                out_path = os.path.join(self.data, f"{me}-dl-{n}")
                op = dict(client=me, op="download", cap=f[0])
                self.execute(client, ["download", f[0], "-o", out_path], op)
                if op["outcome"] == "ack":
                    got = hashlib.sha256(open(out_path, "rb").read()).hexdigest()
                    if got != f[1]:
                        op["wrong"] = "downloaded bytes differ from the uploaded file"
                if os.path.exists(out_path):
                    os.unlink(out_path)
            elif x < 0.65:
                label = r.choice(["M", "S"])
                m = self.mutables[label]
                seq[label] += 1
                path = os.path.join(self.data, f"{me}-{label}-{seq[label]}")
                open(path, "wb").write(token(me, seq[label]))
                op = dict(client=me, op="region", file=label, seq=seq[label], writer=me)
                self.execute(client, ["update", m["cap"], path, "--offset", str(idx * m["stride"])], op)
            elif x < 0.73:
                label = r.choice(["M", "S"])
                m = self.mutables[label]
                out_path = os.path.join(self.data, f"{me}-read-{n}")
                op = dict(client=me, op="read", file=label)
                self.execute(client, ["download", m["cap"], "-o", out_path], op)
                if op["outcome"] == "ack":
                    data = open(out_path, "rb").read()
                    op["seen"] = {}
                    for i, w in enumerate(self.writers):
                        s = token_seq(data[i * m["stride"]:i * m["stride"] + REGION], w)
                        if s is None or len(data) != m["size"]:
                            op["wrong"] = f"read of {label}: region of {w} holds bytes no writer wrote"
                        op["seen"][w] = s
                if os.path.exists(out_path):
                    os.unlink(out_path)
            elif x < 0.80:
                with self.lock:
                    self.wholeseq += 1
                    s = self.wholeseq
                body = self.whole_body(me, s)
                path = os.path.join(self.data, f"{me}-W-{s}")
                open(path, "wb").write(body)
                digest = hashlib.sha256(body).hexdigest()
                with self.lock:
                    self.whole["versions"][digest] = (me, s)
                op = dict(client=me, op="whole", seq=s, writer=me, digest=digest)
                self.execute(client, ["update", self.whole["cap"], path], op)
            else:
                self.dir_op(client, r, n)

    def dir_op(self, client, r, n):
        me = client[0]
        with self.lock:
            present = [k for k, v in self.names.items() if v["state"] == "present"]
            small = [f for f in self.files if f[2] <= 3_000]
        y = r.random()
        if y < 0.55 or not present:
            if not small:
                return
            f = r.choice(small)
            name = f"{me}-{n}"
            with self.lock:
                self.names[name] = dict(cap=f[0], state="claimed")
            op = dict(client=me, op="add", name=name, cap=f[0])
            self.execute(client, ["ln", f[0], f"shared:{name}"], op)
            with self.lock:
                self.names[name]["state"] = "present" if op["outcome"] == "ack" else "uncertain"
        else:
            with self.lock:
                present = [k for k, v in self.names.items() if v["state"] == "present"]
                if not present:
                    return
                name = r.choice(present)
                self.names[name]["state"] = "claimed"
                cap = self.names[name]["cap"]
            if y < 0.8:
                new = f"{name}.r{n}{me}"
                with self.lock:
                    self.names[new] = dict(cap=cap, state="claimed")
                op = dict(client=me, op="rename", name=name, new=new, cap=cap)
                self.execute(client, ["mv", f"shared:{name}", f"shared:{new}"], op)
                with self.lock:
                    if op["outcome"] == "ack":
                        self.names[name]["state"] = "gone"
                        self.names[new]["state"] = "present"
                    else:
                        self.names[name]["state"] = "uncertain"
                        self.names[new]["state"] = "uncertain"
            else:
                op = dict(client=me, op="remove", name=name, cap=cap)
                self.execute(client, ["rm", f"shared:{name}"], op)
                with self.lock:
                    self.names[name]["state"] = "gone" if op["outcome"] == "ack" else "uncertain"

    def maintain_loop(self, deadline):
        """`grid maintain` on one host (c1) every few seconds, as cron would: with a time
        budget, as a cron job has (every step in it is bounded, so a run still going at
        OP_TIMEOUT is a hang, not a long list of repairs)."""
        client = self.g.clients[0]
        r = random.Random(f"{self.seed}-maintain")
        while time.time() < deadline:
            time.sleep(r.uniform(4, 10))
            if time.time() >= deadline:
                break
            op = dict(client=client[0], op="maintain")
            self.execute_side(client, ["maintain", "--quiet", "--grace", "0s", "--interval", "1m", "--max-time", "60s"], op)

    def execute_side(self, client, argv, op):
        _, err = self.timed(client, argv, op, killable=False)
        rc = op["rc"]
        # maintain's exit status is Nagios-style (0 ok, 1 warning, 2 critical): a report, not a failure.
        op["outcome"] = "unknown" if rc < 0 or op.get("stalled") else ("ack" if rc in (0, 1, 2) else "fail")
        if op["outcome"] == "fail":
            op["error"] = err.decode(errors="replace").strip().splitlines()[-1:]
        self.rec.add(op)

    def kill_client(self, name):
        with self.lock:
            cur = self.current.get(name)
            if cur:
                cur[1]["killed"] = True
        if cur:
            try:
                os.kill(cur[0].pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return True
        return False

# --------------------------------------------------------------------------- faults

class Faults:
    def __init__(self, grid, work, seed, seconds):
        self.g, self.w = grid, work
        self.r = random.Random(f"{seed}-faults")
        self.seconds = seconds
        self.active = []            # (heal time, description, undo)
        self.counts = {}
        self.log = []
        self.busy = set()           # hosts under a fault now
        kinds = ["isolate", "kill9", "freeze", "diskfull", "client-kill"]
        if grid.nft_ok:
            kinds += ["partition", "one-way"]
        if grid.skew_ok:
            kinds += ["clock-skew"]
        self.kinds = kinds

    def note(self, kind, what):
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.log.append(dict(t=round(time.time() - self.w.t0, 1), kind=kind, what=what))
        log(f"fault {kind}: {what}")

    def pick_servers(self, n):
        free = [s for s in self.g.servers if s.name not in self.busy]
        return self.r.sample(free, min(n, len(free)))

    def inject(self):
        kind = self.r.choice(self.kinds)
        dur = self.r.uniform(2, 10)
        g = self.g
        if kind == "client-kill":
            c = self.r.choice(g.clients)[0]
            if self.w.kill_client(c):
                self.note(kind, f"kill -9 the grid command running on {c}")
            return
        if kind == "isolate":
            pool = [s.name for s in g.servers] + [c[0] for c in g.clients]
            hosts = [h for h in self.r.sample(pool, self.r.choice([1, 1, 2, 3])) if h not in self.busy]
            if not hosts:
                return
            for h in hosts:
                g.net.link(h, False)
                self.busy.add(h)
            self.note(kind, f"links of {','.join(hosts)} down for {dur:.1f} s")
            def undo(hosts=hosts):
                for h in hosts:
                    g.net.link(h, True)
                    self.busy.discard(h)
        elif kind == "partition" or kind == "one-way":
            side = [s.name for s in self.pick_servers(self.r.choice([2, 3, 4]))]
            if kind == "partition":
                # Two sides that each work inside: these servers plus one client, cut from the rest.
                client = self.r.choice(g.clients)[0]
                if client in self.busy:
                    return
                side.append(client)
            if not side:
                return
            others = [h for h in g.net.hosts if h not in side]
            for h in side:
                if kind == "partition":
                    g.net.block(h, others)
                else:
                    g.net.block(h, others, inbound=False, outbound=True)
                self.busy.add(h)
            what = f"{','.join(side)} | rest" if kind == "partition" else f"{','.join(side)} cannot send to the rest (they still receive)"
            self.note(kind, f"{what} for {dur:.1f} s")
            def undo(side=side):
                for h in side:
                    g.net.unblock(h)
                    self.busy.discard(h)
        elif kind in ("kill9", "freeze", "diskfull", "clock-skew"):
            pick = self.pick_servers(1)
            if not pick:
                return
            s = pick[0]
            self.busy.add(s.name)
            if kind == "kill9":
                s.kill9()
                self.note(kind, f"kill -9 {s.name}, restart after {dur:.1f} s")
                def undo(s=s):
                    s.start(s.skew if s.name in ("s9", "s10") else None)
                    self.busy.discard(s.name)
            elif kind == "freeze":
                s.signal(signal.SIGSTOP)
                s.frozen = True
                self.note(kind, f"SIGSTOP {s.name} for {dur:.1f} s")
                def undo(s=s):
                    s.signal(signal.SIGCONT)
                    s.frozen = False
                    self.busy.discard(s.name)
            elif kind == "diskfull":
                filler = os.path.join(os.path.dirname(s.dir), "filler")
                subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                self.note(kind, f"{s.name}'s disk filled for {dur:.1f} s")
                def undo(s=s, filler=filler):
                    if os.path.exists(filler):
                        os.unlink(filler)
                    self.busy.discard(s.name)
            else:
                hours = self.r.choice([-9, -5, -3, 3, 5, 9])
                s.stop()
                base = s.skew
                s.start(hours)
                dur = max(dur, 6)
                self.note(kind, f"{s.name} restarted with its clock {hours:+d} h off for {dur:.1f} s")
                def undo(s=s, base=base):
                    s.stop()
                    s.start(base)
                    s.skew = base
                    self.busy.discard(s.name)
        self.active.append((time.time() + dur, undo))

    def heal_due(self, everything=False):
        now = time.time()
        keep = []
        for t, undo in self.active:
            if everything or t <= now:
                try:
                    undo()
                except Exception as e:
                    log(f"heal failed: {e}")
            else:
                keep.append((t, undo))
        self.active = keep

    def loop(self, deadline, stop):
        next_at = time.time() + self.r.uniform(1, 4)
        while not stop.is_set() and time.time() < deadline:
            self.heal_due()
            if time.time() >= next_at and len(self.active) < 3:
                try:
                    self.inject()
                except Exception as e:
                    log(f"fault failed to inject: {e}")
                next_at = time.time() + self.r.uniform(1.5, 5)
            time.sleep(0.2)
        self.heal_due(everything=True)

# --------------------------------------------------------------------------- checker

def check(grid, work):
    """Everything healed: prove what the clients were told."""
    problems = []      # (lost|wrong, text)
    c = grid.clients[1]
    ops = work.rec.ops
    # 1. Every acknowledged upload downloads byte for byte.
    acked = [o for o in ops if o["op"] == "upload" and o["outcome"] == "ack"]
    found = []
    def fetch(i):
        # Each client host downloads every third file: three at a time.
        client = grid.clients[i]
        for o in acked[i::len(grid.clients)]:
            out_path = os.path.join(work.data, f"check-dl-{i}")
            rc, _, err = grid.run(client, ["download", o["cap"], "-o", out_path], timeout=OP_TIMEOUT)
            if rc != 0:
                found.append(("lost", f"acknowledged upload {o['cap'][:40]}… ({o['size']} B by {o['client']}): download exit {rc}: {err.strip()}"))
            elif hashlib.sha256(open(out_path, "rb").read()).hexdigest() != o["digest"]:
                found.append(("wrong", f"acknowledged upload {o['cap'][:40]}… downloads other bytes"))
    ts = [threading.Thread(target=fetch, args=(i,)) for i in range(len(grid.clients))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    problems += found
    # Anything a client downloaded or read wrongly during the run.
    for o in ops:
        if o.get("wrong"):
            problems.append(("wrong", f"{o['op']} by {o['client']} at {o['start']:.1f} s: {o['wrong']}"))
    log("check: directory")
    # 2. The shared directory.
    rc, out, err = grid.run(c, ["ls", "--json", "shared:"], timeout=OP_TIMEOUT)
    if rc != 0:
        problems.append(("lost", f"the shared directory cannot be listed: exit {rc}: {err.strip()}"))
        children = None
    else:
        children = {}
        for name, (kind, info) in json.loads(out)[1]["children"].items():
            children[name] = info.get("ro_uri") or info.get("rw_uri")
    if children is not None:
        dirops = {}
        for o in ops:
            if o["op"] in ("add", "rename", "remove"):
                dirops.setdefault(o["name"], []).append(o)
                if o["op"] == "rename":
                    dirops.setdefault(o["new"], []).append(dict(o, op="renamed-in"))
        for name, cap in children.items():
            if name not in dirops:
                problems.append(("wrong", f"shared:{name} exists but no client made it"))
        for name, lst in dirops.items():
            made = [o for o in lst if o["op"] in ("add", "renamed-in")]
            taken = [o for o in lst if o["op"] in ("rename", "remove")]
            cap = made[0]["cap"] if made else None
            have = children.get(name)
            if have is not None and have != cap:
                problems.append(("wrong", f"shared:{name} links {have[:40]}…, not what was linked"))
            acked_made = any(o["outcome"] == "ack" for o in made)
            acked_taken = any(o["outcome"] == "ack" for o in taken)
            if acked_made and not taken and have is None:
                problems.append(("lost", f"shared:{name} was acknowledged ({made[0]['op']} by {made[0]['client']}) and is gone"))
            if acked_taken and have is not None:
                problems.append(("wrong", f"shared:{name} was removed or renamed (acknowledged) and is back"))
        # An uncertain rename in one directory is one write: exactly one of the two names.
        for o in ops:
            if o["op"] == "rename" and o["outcome"] != "ack":
                later = [p for p in dirops.get(o["new"], []) if p["op"] in ("rename", "remove")]
                src_taken = [p for p in dirops.get(o["name"], []) if p["op"] in ("rename", "remove") and p is not o]
                if later or src_taken:
                    continue
                if (o["name"] in children) == (o["new"] in children):
                    problems.append(("lost" if o["name"] not in children else "wrong",
                                     f"uncertain rename shared:{o['name']} -> {o['new']}: {'both' if o['name'] in children else 'neither'} present"))
    log("check: mutable files")
    # 3. Mutable files written by regions: each region holds its writer's last acknowledged
    # token, or a later one whose outcome was not known.
    for label, m in work.mutables.items():
        out_path = os.path.join(work.data, f"check-{label}")
        rc, _, err = grid.run(c, ["download", m["cap"], "-o", out_path], timeout=OP_TIMEOUT)
        if rc != 0:
            problems.append(("lost", f"mutable {label} cannot be read: exit {rc}: {err.strip()}"))
            continue
        data = open(out_path, "rb").read()
        if len(data) != m["size"]:
            problems.append(("wrong", f"mutable {label} is {len(data)} bytes, not {m['size']}"))
        for i, w in enumerate(work.writers):
            s = token_seq(data[i * m["stride"]:i * m["stride"] + REGION], w)
            writes = [o for o in ops if o["op"] == "region" and o["file"] == label and o["writer"] == w]
            last_ack = max([o["seq"] for o in writes if o["outcome"] == "ack"], default=0)
            allowed = {last_ack} | {o["seq"] for o in writes if o["seq"] > last_ack}
            if s is None:
                problems.append(("wrong", f"mutable {label}: {w}'s region holds bytes nobody wrote"))
            elif s not in allowed:
                problems.append(("lost", f"mutable {label}: {w}'s acknowledged write {last_ack} is lost (region holds {s})"))
    # 4. The whole-file mutable: a version some writer wrote, and none acknowledged after it began... ended.
    out_path = os.path.join(work.data, "check-W")
    rc, _, err = grid.run(c, ["download", work.whole["cap"], "-o", out_path], timeout=OP_TIMEOUT)
    if rc != 0:
        problems.append(("lost", f"mutable W cannot be read: exit {rc}: {err.strip()}"))
    else:
        d = hashlib.sha256(open(out_path, "rb").read()).hexdigest()
        writes = [o for o in ops if o["op"] == "whole"]
        mine = [o for o in writes if o["digest"] == d]
        if not mine:
            problems.append(("wrong", "mutable W holds a version nobody wrote"))
        else:
            w = mine[0]
            later = [o for o in writes if o["outcome"] == "ack" and o["start"] > w["end"]]
            if later:
                problems.append(("lost", f"mutable W holds {w['writer']}:{w['seq']}, but {later[-1]['writer']}:{later[-1]['seq']} was acknowledged after it ended"))
    log("check: verify every share")
    # 5. No share on any server fails its hashes.
    caps = [o["cap"] for o in acked] + [m["cap"] for m in work.mutables.values()] + [work.whole["cap"], work.dircap]
    manifest = os.path.join(work.data, "manifest")
    open(manifest, "w").write("\n".join(caps) + "\n")
    verified, corrupt = check_all(grid, c, caps, verify=True, problems=problems)
    log("check: maintain")
    # 6. One `grid maintain` run, then every file is healthy (all 10 shares placed: the
    # margin makes this run repair anything short of that, not only what fell to the
    # default threshold).
    try:
        rc, out, err = grid.run(grid.clients[0], ["maintain", "--quiet", "--grace", "0s", "--repair-margin", "6", "--manifest", manifest], timeout=900)
    except RuntimeError as e:
        rc, err = None, str(e)
        problems.append(("stall", f"the final maintain run did not finish: {e}"))
    maintain_rc = rc
    log(f"check: maintain exit {rc}; census of every file")
    unhealthy = check_all(grid, c, caps, verify=False, problems=problems, need_healthy=True)
    return problems, dict(verified=verified, corrupt_shares=corrupt, maintain_exit=maintain_rc, unhealthy_after_maintain=unhealthy)

def check_all(grid, c, caps, verify, problems, need_healthy=False):
    bad = 0
    corrupt = 0
    done = 0
    for i in range(0, len(caps), 40):
        chunk = caps[i:i + 40]
        argv = ["check", "--json"] + (["--verify"] if verify else []) + chunk
        rc, out, err = grid.run(c, argv, timeout=600)
        seen = 0
        for line in out.splitlines():
            try:
                j = json.loads(line)
            except ValueError:
                continue
            seen += 1
            done += 1
            if j.get("corrupt"):
                corrupt += len(j["corrupt"])
                problems.append(("wrong", f"{j.get('cap', '?')[:40]}…: corrupt shares {j['corrupt']}"))
            if need_healthy and (j.get("missing") or j.get("happiness", 0) < j.get("happy", 7)):
                bad += 1
                problems.append(("lost", f"{j.get('cap', '?')[:40]}… not healthy after maintain: missing {j.get('missing')}, happiness {j.get('happiness')}"))
        if seen != len(chunk):
            problems.append(("lost", f"check {'--verify ' if verify else ''}answered for {seen} of {len(chunk)} files: exit {rc}: {err.strip()[-300:]}"))
    return bad if need_healthy else (done, corrupt)

# --------------------------------------------------------------------------- scenarios

def scenario_split_brain(grid, work, faults):
    """A fixed schedule: client c1 and servers s1-s3 are cut off from everyone else while
    c1 and c2 each change the same mutable files and directory; then the cut heals. Each
    side can reach k = 3 servers or more, so both may think their write landed."""
    side = ["c1", "s1", "s2", "s3"]
    others = [h for h in grid.net.hosts if h not in side]
    for h in side:
        grid.net.block(h, others)
    faults.note("partition", f"{','.join(side)} | rest (split-brain scenario)")
    c1, c2 = grid.clients[0], grid.clients[1]
    small = os.path.join(work.data, "split-small")
    open(small, "wb").write(b"split brain\n")
    cap = grid.must(c2, ["upload", small]).strip().splitlines()[-1]
    def writes(client, idx):
        me = client[0]
        for label in ("M", "S"):
            m = work.mutables[label]
            path = os.path.join(work.data, f"{me}-{label}-split")
            open(path, "wb").write(token(me, 1))
            work.execute(client, ["update", m["cap"], path, "--offset", str(idx * m["stride"])],
                         dict(client=me, op="region", file=label, seq=1, writer=me))
        body = work.whole_body(me, 1000 + idx)
        path = os.path.join(work.data, f"{me}-W-split")
        open(path, "wb").write(body)
        digest = hashlib.sha256(body).hexdigest()
        work.whole["versions"][digest] = (me, 1000 + idx)
        work.execute(client, ["update", work.whole["cap"], path], dict(client=me, op="whole", seq=1000 + idx, writer=me, digest=digest))
        name = f"{me}-split"
        work.names[name] = dict(cap=cap, state="claimed")
        work.execute(client, ["ln", cap, f"shared:{name}"], dict(client=me, op="add", name=name, cap=cap))
    ts = [threading.Thread(target=writes, args=(c1, 0)), threading.Thread(target=writes, args=(c2, 1))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for h in side:
        grid.net.unblock(h)

SCENARIOS = {"split-brain": scenario_split_brain}

# --------------------------------------------------------------------------- main

def summarize(work, faults, problems, extra, grid, seed, seconds, started):
    by = {}
    for o in work.rec.ops:
        k = by.setdefault(o["op"], {"ack": 0, "fail": 0, "unknown": 0})
        k[o["outcome"]] += 1
    for kind, v in by.items():
        d = sorted(o["end"] - o["start"] for o in work.rec.ops if o["op"] == kind)
        v["median_s"] = round(d[len(d) // 2], 2)
        v["max_s"] = round(d[-1], 2)
    unclear = [o for o in work.rec.ops if o["outcome"] == "fail" and not o.get("clear", True)]
    errors = {}
    for o in work.rec.ops:
        if o["outcome"] == "fail":
            key = f"exit {o['rc']}"
            errors[key] = errors.get(key, 0) + 1
    # Reads that returned an older version than one already acknowledged before they began
    # (allowed: mutable files are not linearizable under partitions; counted, not hidden).
    stale = 0
    for o in work.rec.ops:
        if o["op"] == "read" and o["outcome"] == "ack" and o.get("seen"):
            for w, seen in o["seen"].items():
                done = [p["seq"] for p in work.rec.ops if p["op"] == "region" and p["file"] == o["file"] and p["writer"] == w
                        and p["outcome"] == "ack" and p["end"] < o["start"]]
                if seen is not None and done and seen < max(done):
                    stale += 1
                    break
    lost = sum(1 for p in problems if p[0] == "lost")
    wrong = sum(1 for p in problems if p[0] == "wrong")
    return dict(seed=seed, seconds=seconds, wall_seconds=round(time.time() - started, 1),
                operations={k: sum(v[k] for v in by.values()) for k in ("ack", "fail", "unknown")},
                by_kind=by, failures_by_exit=errors, unclear_failures=[dict(op=o["op"], rc=o["rc"], error=o.get("error")) for o in unclear][:10],
                faults=faults.counts, fault_kinds_unavailable=[k for k in ("partition", "one-way", "clock-skew") if k not in faults.kinds],
                stalls=work.stalls + sum(1 for p in problems if p[0] == "stall"), stale_reads=stale, lost=lost, wrong=wrong, problems=[f"{a}: {b}" for a, b in problems],
                location=grid.location_check, **extra, fault_log=faults.log)

def run(args):
    why = can_make_namespaces()
    if why:
        print(f"netgrid: cannot make network namespaces here ({why}); skipped", file=sys.stderr)
        return 77
    if not os.access(args.grid_bin, os.X_OK):
        print(f"netgrid: {args.grid_bin} is not an executable grid binary", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    seconds = args.seconds if args.minutes is None else args.minutes * 60
    root = tempfile.mkdtemp(prefix="netgrid.")
    os.chmod(root, 0o700)
    grid = Grid(args, root)
    started = time.time()
    log(f"netgrid: seed {seed}, workload {seconds:.0f} s, root {root}, namespaces {grid.tag}-*")
    # The whole run is bounded: setup, workload, healing and the checker.
    # Checking takes longer the more was written: by default as long again as the workload, plus 10 minutes.
    bound = seconds + (args.slack if args.slack is not None else 600 + seconds)
    def on_alarm(*_):
        raise TimeoutError(f"netgrid: the run exceeded its bound of {bound:.0f} s")
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    signal.alarm(int(bound))
    status = 2
    try:
        grid.setup()
        work = Workload(grid, seed, seconds)
        work.prepare()
        if args.introducer_down:
            grid.introducer.stop()
            log("introducer stopped for the whole workload: clients use the servers they know")
        faults = Faults(grid, work, seed, seconds)
        if args.scenario:
            SCENARIOS[args.scenario](grid, work, faults)
            seconds = 0
        deadline = time.time() + seconds
        stop = threading.Event()
        threads = [threading.Thread(target=work.client_loop, args=(i, deadline), daemon=True) for i in range(N_CLIENTS)]
        threads.append(threading.Thread(target=work.maintain_loop, args=(deadline,), daemon=True))
        ft = threading.Thread(target=faults.loop, args=(deadline, stop), daemon=True)
        for t in threads + [ft]:
            t.start()
        ft.join()
        log("workload over; faults healed; waiting for operations in flight")
        for t in threads:
            t.join(timeout=OP_TIMEOUT + 10)
        grid.heal_daemons()
        time.sleep(3)
        log("checking")
        problems, extra = check(grid, work)
        rep = summarize(work, faults, problems, extra, grid, seed, seconds, started)
        rep["introducer_down_during_workload"] = args.introducer_down
        text = report_text(rep)
        print(text)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(dict(rep, ops=work.rec.ops), f, indent=1, default=str)
        status = 0 if rep["lost"] == 0 and rep["wrong"] == 0 and rep["stalls"] == 0 and not rep["unclear_failures"] else 1
    except (TimeoutError, RuntimeError, KeyboardInterrupt) as e:
        print(f"netgrid: {e or 'interrupted'}; everything it made is being removed", file=sys.stderr)
        status = 2
    finally:
        signal.alarm(0)
        grid.teardown()
        if args.keep or status != 0:
            print(f"netgrid: logs kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return status

def report_text(rep):
    o = rep["operations"]
    lines = [f"netgrid seed {rep['seed']}: {rep['seconds']:.0f} s workload, 1 introducer{' (down the whole workload)' if rep.get('introducer_down_during_workload') else ''}, {N_SERVERS} storage servers, {N_CLIENTS} clients, each on its own host ({rep['wall_seconds']} s in all)",
             f"operations: {o['ack']} acknowledged, {o['fail']} failed, {o['unknown']} unknown"]
    for k, v in sorted(rep["by_kind"].items()):
        lines.append(f"  {k:9} {v['ack']:5} ack {v['fail']:4} failed {v['unknown']:3} unknown   {v['median_s']:6.2f} s median {v['max_s']:7.2f} s max")
    if rep["failures_by_exit"]:
        lines.append("failures by exit status: " + ", ".join(f"{k}: {v}" for k, v in sorted(rep["failures_by_exit"].items())))
    lines.append("faults: " + ", ".join(f"{k} {v}" for k, v in sorted(rep["faults"].items())))
    if rep["fault_kinds_unavailable"]:
        lines.append("fault kinds this machine cannot make: " + ", ".join(rep["fault_kinds_unavailable"]))
    lines.append(f"s1 announced {', '.join(rep['location']['s1_announced'])}; reached from {', '.join(rep['location']['reached_from'])}")
    lines.append(f"checked: {rep['verified']} files verified, {rep['corrupt_shares']} corrupt shares; after one maintain run (exit {rep['maintain_exit']}) {rep['unhealthy_after_maintain']} unhealthy")
    lines.append(f"mutable reads that returned an older version than one acknowledged before they began: {rep['stale_reads']}")
    if rep["stalls"]:
        lines.append(f"stalled operations (over {OP_TIMEOUT:.0f} s): {rep['stalls']}")
    for u in rep["unclear_failures"]:
        lines.append(f"unclear failure: {u}")
    for p in rep["problems"][:30]:
        lines.append("  " + p)
    lines.append(f"lost or wrong: {rep['lost'] + rep['wrong']}")
    return "\n".join(lines)

def clean():
    r = sh("ip", "netns", "list", check=False)
    n = 0
    for line in r.stdout.decode().splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith("ng") and "-" in name and name.split("-")[0][2:].isalnum():
            sh("ip", "netns", "del", name, check=False)
            n += 1
    for line in open("/proc/mounts"):
        f = line.split()
        if f[0] == "netgrid" and f[2] == "tmpfs":
            subprocess.run(["umount", "-l", f[1]])
    print(f"removed {n} namespaces")
    return 0

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "soak"):
        p = sub.add_parser(name)
        p.add_argument("--seconds", type=float, default=60)
        p.add_argument("--minutes", type=float, default=None if name == "run" else 30)
        p.add_argument("--seed", type=int)
        p.add_argument("--json", help="write the report and every operation here")
        p.add_argument("--keep", action="store_true", help="keep the run's directory (logs, node directories)")
        p.add_argument("--grid-bin", default=os.environ.get("GRID_BIN", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".build", "release", "grid")))
        p.add_argument("--disk-mib", type=int, default=512, help="each server's disk (tmpfs) size")
        p.add_argument("--introducer-down", action="store_true", help="stop the introducer for the whole workload")
        p.add_argument("--scenario", choices=sorted(SCENARIOS), help="run this fixed fault schedule instead of the random workload")
        p.add_argument("--slack", type=float, default=None, help="seconds allowed beyond the workload for setup and checking (default: 600 + the workload's)")
    sub.add_parser("clean")
    args = ap.parse_args()
    if args.cmd == "clean":
        return clean()
    return run(args)

if __name__ == "__main__":
    sys.exit(main())
