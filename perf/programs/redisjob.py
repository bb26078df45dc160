#!/usr/bin/env python3
"""redisjob.py: the redis workload of the perf harness: does an allocator give back what redis freed?

    redisjob.py KEYS SETS IDLE_MS [mixed|small] [sync|async]

Starts Debian's redis-server on a free loopback port with the allocator of the environment variable
PERF_SERVER_PRELOAD preloaded into the server alone (this driver runs under the system allocator), then:
  1. load:  KEYS SETs of values of mixed sizes (1/2 16-256 B, 3/8 256 B-2 KiB, 1/8 2-8 KiB), or small ones
            (3-64 B);
  2. flush: FLUSHALL SYNC (every value freed by the main thread), or FLUSHALL ASYNC (freed by redis's lazyfree
            thread, another thread than the one that allocated them), then until INFO's
            lazyfree_pending_objects is 0;
  3. sets:  SETS SETs of the same mix (new keys);
  4. idle:  IDLE_MS milliseconds with nothing to do;
  5. purge: MEMORY PURGE, then 200 ms.
The server's VmRSS is read from /proc after each step and sampled every 50 ms all along. Prints the samples
("sample ops=<keys> ms=<since start> rss_kib=<RSS>") and one result line:
  workload=redis ... malloc=<the library redis-server's malloc is bound to> rss_load_kib=... rss_flush_kib=...
  rss_sets_kib=... rss_idle_kib=... rss_purge_kib=... used_kib=... (redis's own count of live bytes after
  the sets) server_user_s=... server_sys_s=... (the server's CPU time)

Debian's redis-server is linked with libjemalloc.so.2 but calls the plain malloc, free, calloc, realloc and
malloc_usable_size, so a preloaded library takes them over; to compare with glibc's malloc, libc.so.6 itself
is preloaded (otherwise jemalloc would serve them). Which library serves them is checked, not assumed: the
dynamic linker's binding log (LD_DEBUG=bindings) of `redis-server --version` under the same preload must bind
all five to one library, which is the malloc= of the result line. MEMORY PURGE reaches jemalloc's mallctl
whatever is preloaded: it purges only when jemalloc is the allocator. The server is always stopped: SHUTDOWN
NOSAVE, then SIGKILL if it is still there. Exit status 0, or 1 with the reason on stderr."""
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BOUND = ("malloc", "free", "calloc", "realloc", "malloc_usable_size")
SAMPLE_S = 0.05
BATCH = 500  # commands per pipelined write


def fail(msg):
    print(f"redisjob: {msg}", file=sys.stderr)
    sys.exit(1)


def malloc_library(server, env):
    """The basename of the one library that redis-server's malloc family binds to under env, or fail."""
    e = dict(env, LD_DEBUG="bindings")
    p = subprocess.run([server, "--version"], env=e, capture_output=True, text=True, timeout=30)
    libs = {}
    for line in p.stderr.splitlines():
        if "binding file redis-server " not in line and f"binding file {server} " not in line:
            continue
        for sym in BOUND:
            if f"normal symbol `{sym}'" in line:
                libs.setdefault(sym, set()).add(line.split(" to ", 1)[1].split(" [", 1)[0])
    found = set().union(*libs.values()) if libs else set()
    if set(libs) != set(BOUND) or len(found) != 1:
        fail(f"cannot tell which malloc redis-server uses: {libs or 'no binding lines'}")
    return os.path.basename(found.pop())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def cpu_seconds(pid):
    """(user, system) seconds of the process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def command(*words):
    out = [f"*{len(words)}\r\n".encode()]
    for w in words:
        b = w if isinstance(w, bytes) else str(w).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class Client:
    """A RESP client on one socket: pipelined commands, replies read and checked."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                fail("the server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        """One reply: a simple string, an integer or a bulk string (the commands here get no arrays)."""
        line = self.line()
        kind, rest = line[:1], line[1:]
        if kind == b"-":
            fail(f"redis error: {rest.decode(errors='replace')}")
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    fail("the server closed the connection")
                self.buf += chunk
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        return rest

    def call(self, *words):
        self.sock.sendall(command(*words))
        return self.reply()

    def pipeline(self, commands):
        self.sock.sendall(b"".join(commands))
        for _ in commands:
            self.reply()


def value_size(r, mix):
    if mix == "small":
        return r.randint(3, 64)
    x = r.random()
    if x < 0.5:
        return r.randint(16, 256)
    if x < 0.875:
        return r.randint(257, 2048)
    return r.randint(2049, 8192)


def set_keys(client, prefix, n, r, mix, progress):
    payload = bytes(range(256)) * 33  # 8,448 bytes to cut values from
    done = 0
    while done < n:
        k = min(BATCH, n - done)
        cmds = []
        for i in range(done, done + k):
            size = value_size(r, mix)
            off = r.randrange(0, len(payload) - size)
            cmds.append(command("SET", f"{prefix}:{i}", payload[off:off + size]))
        client.pipeline(cmds)
        done += k
        progress(k)


def info_field(client, name):
    text = client.call("INFO", "memory").decode()
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def wait_ready(port, proc, log):
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            fail(f"redis-server exited with status {proc.returncode}: {tail(log)}")
        try:
            c = Client(port)
            if c.call("PING") == b"PONG":
                return c
        except OSError:
            pass
        time.sleep(0.02)
    fail(f"redis-server did not answer within 20 s: {tail(log)}")


def tail(path):
    try:
        with open(path, errors="replace") as f:
            return " | ".join(f.read().strip().splitlines()[-3:])
    except OSError:
        return "(no log)"


class Sampler(threading.Thread):
    """Samples the server's VmRSS every SAMPLE_S seconds: (ops, ms, rss KiB)."""

    def __init__(self, pid, t0):
        super().__init__(daemon=True)
        self.pid, self.t0, self.ops = pid, t0, 0
        self.samples, self.stop = [], threading.Event()

    def take(self):
        self.samples.append((self.ops, (time.time() - self.t0) * 1e3, rss_kib(self.pid)))
        return self.samples[-1][2]

    def run(self):
        while not self.stop.wait(SAMPLE_S):
            self.take()


def stop_server(proc, client):
    try:
        if client:
            client.sock.sendall(command("SHUTDOWN", "NOSAVE"))
    except OSError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv):
    if not 4 <= len(argv) <= 6 or (len(argv) >= 5 and argv[4] not in ("mixed", "small")) or \
            (len(argv) == 6 and argv[5] not in ("sync", "async")):
        fail("usage: redisjob.py KEYS SETS IDLE_MS [mixed|small] [sync|async]")
    keys, sets, idle_ms = int(argv[1]), int(argv[2]), int(argv[3])
    mix = argv[4] if len(argv) >= 5 else "mixed"
    flush = argv[5] if len(argv) == 6 else "sync"
    server = shutil.which("redis-server")
    if not server:
        fail("redis-server not found (apt-get install redis-server)")
    preload = os.environ.get("PERF_SERVER_PRELOAD", "")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PERF_SERVER_PRELOAD")}
    if preload:
        env["LD_PRELOAD"] = preload
    lib = malloc_library(server, env)
    r = random.Random(2026)
    tmp = tempfile.mkdtemp(prefix="perf-redis-")
    log = os.path.join(tmp, "redis.log")
    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--daemonize", "no", "--protected-mode", "no", "--dir", tmp, "--logfile", log,
                             "--lazyfree-lazy-user-flush", "no"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = None
    try:
        client = wait_ready(port, proc, log)
        t0 = time.time()
        sampler = Sampler(proc.pid, t0)
        sampler.start()

        def progress(k):
            sampler.ops += k

        rss = {}
        set_keys(client, "load", keys, r, mix, progress)
        rss["load"] = sampler.take()
        client.call("FLUSHALL", flush.upper())
        deadline = time.time() + 60
        while flush == "async" and info_field(client, "lazyfree_pending_objects") not in ("0", ""):
            if time.time() > deadline:
                fail("the lazyfree thread did not finish within 60 s")
            time.sleep(0.01)
        sampler.ops = 0
        rss["flush"] = sampler.take()
        set_keys(client, "sets", sets, r, mix, progress)
        rss["sets"] = sampler.take()
        used = int(info_field(client, "used_memory") or 0)
        time.sleep(idle_ms / 1000)
        rss["idle"] = sampler.take()
        client.call("MEMORY", "PURGE")
        time.sleep(0.2)
        rss["purge"] = sampler.take()
        seconds = time.time() - t0
        user, system = cpu_seconds(proc.pid)
        sampler.stop.set()
        sampler.join()
    finally:
        stop_server(proc, client)
        shutil.rmtree(tmp, ignore_errors=True)
    for ops, ms, kib in sampler.samples:
        print(f"sample ops={ops} ms={ms:.1f} rss_kib={kib}")
    fields = " ".join(f"rss_{k}_kib={v}" for k, v in rss.items())
    print(f"workload=redis threads=1 ops={keys + sets} seconds={seconds:.6f} malloc={lib} check=0 keys={keys} "
          f"sets={sets} {fields} used_kib={used // 1024} server_user_s={user:.2f} server_sys_s={system:.2f}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # the finally clause stops the server
    sys.exit(main(sys.argv))
