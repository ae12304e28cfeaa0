#!/usr/bin/python3
"""Driver of scripts/bench: starts nginx (a static upstream and a proxy),
redis-server, the mock FranceConnect and sesame on loopback, loads them with
wrk and prints figures. Run it through scripts/bench, which installs wrk and
nginx, builds sesame and removes leftovers. Python 3 standard library only,
plus the repository's test harness (tests/mockfc/harness.py,
tests/integration/signin_env.py) for the mock and the sign-in.

Figures only: nothing here asserts a timing. It exits non-zero when the stack
cannot be started or when a measured request does not get the expected answer
(status 200 with the upstream's page, every wrk request reaching the
upstream), because a figure for a wrong answer means nothing.

Measurements (wrk, fixed duration, after a warm-up run):
  1  nginx serving a ~200-byte static file, directly;
  2  nginx proxy_pass to it (keep-alive upstream): the reference;
  3  sesame, public route, same upstream;
  4  sesame, required route, with a valid session cookie (signed in once
     through the mock): every request authenticated; the session comes from
     the worker's in-process cache (cache_ttl, 5 s by default);
  4b the same with cache_ttl = 0: a Redis GET, decryption and decoding of
     the session on every request (what a request costs when its session is
     not in the cache: a real population of citizens rather than one cookie);
  5  the sesame CPU of one full FranceConnect sign-in (N sequential sign-ins
     through the mock, sesame's CPU time divided by N).
CPU per request: utime + stime from /proc/PID/stat before and after, divided
by wrk's request count (nginx: master + workers; sesame: the process, all
threads). When strace is installed, 2 more seconds of the same load run
under `strace -c -f` to count system calls per request (counts only).
"""

import argparse
import http.client
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")
BODY = (b"<!doctype html><html lang=\"fr\"><head><meta charset=\"utf-8\"><title>Portail</title>"
        b"</head><body><h1>D\xc3\xa9marches en ligne</h1><p>Service de test pour le banc de mesure "
        b"de S\xc3\xa9same.</p></body></html>\n")
LOGINS = ["marie", "jean", "karim", "paola", "theo", "alex"]  # plain adult test identities
CLIENT_SECRET = "secret-ville-a-0123456789"                   # signin_env.CLIENTS[0]
SESSION_KEY = "YmVuY2gtc2Vzc2lvbi1rZXktMDEyMzQ1Njc4OWFiY2RlZg=="


def env_int(name, default):
    v = os.environ.get(name, "").strip()
    return int(v) if v else default


# ---------------------------------------------------------------- processes

class Procs:
    """Every process started here leads its own process group
    (start_new_session); the group id is appended to RUN/pids for the shell
    trap. stop() ends a group: SIGTERM, then SIGKILL after 5 s."""

    def __init__(self, run):
        self.run = run
        self.live = []

    def start(self, argv, name, env=None):
        with open(os.path.join(self.run, name + ".out"), "wb") as out:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.adopt(p.pid)
        self.live.append(p)
        return p

    def adopt(self, pgid):
        with open(os.path.join(self.run, "pids"), "a") as f:
            f.write("%d\n" % pgid)

    def stop(self, p):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:  # what is left of the group (nginx workers if the master died first)
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if p.poll() is None:
            p.wait()
        if p in self.live:
            self.live.remove(p)

    def stop_all(self):
        for p in reversed(list(self.live)):
            self.stop(p)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, name, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited (%s) before listening on %d"
                               % (name, proc.returncode, port))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("%s: nothing listening on port %d after %.0f s" % (name, port, timeout))


# ---------------------------------------------------------------- CPU accounting

def stat_fields(pid):
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    return s[s.rindex(")") + 2:].split()  # fields from 3 (state) on


def proc_cpu(pid):
    """utime + stime of a whole process (all its threads), in seconds."""
    f = stat_fields(pid)
    return (int(f[11]) + int(f[12])) / TICK


def children_of(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if int(stat_fields(int(d))[1]) == pid:
                    out.append(int(d))
            except OSError:
                pass
    return out


class Group:
    """A measured server: one process, or an nginx master and its workers
    (taken once, when the server is up)."""

    def __init__(self, pid, with_children=False):
        self.pids = [pid] + (children_of(pid) if with_children else [])

    def cpu(self):
        return sum(proc_cpu(p) for p in self.pids)


def machine_cpu():
    """CPU seconds over all CPUs from /proc/stat: (tasks, irq, steal, total).
    tasks = user + nice + system (what processes are charged); irq = hard
    and soft interrupts (loopback TCP delivery is mostly softirq, charged to
    no process); steal = taken by the hypervisor."""
    with open("/proc/stat") as f:
        v = [int(x) / TICK for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    return (user + nice + system, irq + softirq, steal, sum(v))


# ---------------------------------------------------------------- wrk

UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * UNIT_MS[m.group(2)]


def run_wrk(url, host, cookie, threads, conns, seconds):
    argv = ["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % seconds, "--latency",
            "--timeout", "5s", "-H", "Host: " + host]
    if cookie:
        argv += ["-H", "Cookie: " + cookie]
    argv.append(url)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError("wrk failed: %s" % (out.stderr or out.stdout))
    text = out.stdout
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", text)
    if m is None:
        raise RuntimeError("unexpected wrk output:\n" + text)
    r = {"requests": int(m.group(1)), "elapsed": to_ms(m.group(2) + m.group(3)) / 1e3,
         "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}
    for pct in ("50", "99"):
        r["p" + pct] = to_ms(re.search(r"^\s+%s%%\s+(\S+)" % pct, text, re.M).group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["sockerr"] = sum(int(x) for x in m.groups()) if m else 0
    r["wrk_cpu"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return r


# ---------------------------------------------------------------- checks

def upstream_requests(status_port):
    """Requests handled so far by the upstream nginx (stub_status; the
    status request itself included)."""
    c = http.client.HTTPConnection("127.0.0.1", status_port, timeout=5)
    c.request("GET", "/")
    body = c.getresponse().read().decode()
    c.close()
    return int(re.search(r"\n\s*\d+\s+\d+\s+(\d+)", body).group(1))


def check_once(port, host, path, cookie):
    """One request: it must get the upstream's page."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"Host": host}
    if cookie:
        headers["Cookie"] = cookie
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    body = r.read()
    c.close()
    if r.status != 200 or body != BODY:
        raise RuntimeError("GET %s on port %d (Host %s): status %d, %d bytes: not the upstream's "
                           "page" % (path, port, host, r.status, len(body)))


def session_record_size(redis_port):
    """Size in bytes of one stored session (the encrypted value), or None."""
    if shutil.which("redis-cli") is None:
        return None
    cli = ["redis-cli", "-p", str(redis_port), "--raw"]
    keys = subprocess.run(cli + ["--scan", "--pattern", "sesame:s:*"], capture_output=True,
                          text=True, timeout=10).stdout.split()
    if not keys:
        return None
    out = subprocess.run(cli + ["STRLEN", keys[0]], capture_output=True, text=True,
                         timeout=10).stdout.strip()
    return int(out) if out.isdigit() else None


def syscall_profile(procs, run, tag, group, status_port, wrk_args, seconds):
    """Counts the system calls of the group's processes (all threads) with
    strace -c while wrk runs for `seconds`. Returns {syscall: calls per
    request}, requests being those the upstream nginx handled meanwhile, or
    None when strace is absent or cannot attach. strace slows the traced
    processes down: only the counts are used, never a time."""
    if shutil.which("strace") is None:
        return None
    path = os.path.join(run, "strace-%s.txt" % tag)
    argv = ["strace", "-c", "-f", "-o", path]
    for pid in group.pids:
        argv += ["-p", str(pid)]
    with open(os.path.join(run, "strace-%s.err" % tag), "wb") as log:
        st = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                              start_new_session=True)
    procs.adopt(st.pid)
    time.sleep(0.5)  # attached to every thread
    if st.poll() is not None:
        return None
    n0 = upstream_requests(status_port)
    run_wrk(*wrk_args, seconds)
    n1 = upstream_requests(status_port)
    st.send_signal(signal.SIGINT)
    try:
        st.wait(10)
    except subprocess.TimeoutExpired:
        st.kill()
        st.wait()
        return None
    n = n1 - n0 - 1
    counts = {}
    try:
        with open(path) as f:
            for line in f:
                t = line.split()
                if len(t) >= 5 and t[0][0].isdigit() and t[-1] != "total":
                    counts[t[-1]] = int(t[3])
    except OSError:
        return None
    if n <= 0 or not counts:
        return None
    return {k: v / n for k, v in counts.items()}


# ---------------------------------------------------------------- configurations

def write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def nginx_conf(d, listen, status_port=None, upstream_port=None):
    """Writes D/nginx.conf: a static file server (with stub_status on
    status_port) or, given upstream_port, a proxy_pass to it with a
    keep-alive upstream. Returns its path."""
    os.makedirs(d, mode=0o755, exist_ok=True)
    os.chmod(d, 0o755)  # workers run as nobody when the master is root
    temps = "\n".join("  %s_temp_path %s/%s;" % (k, d, k)
                      for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    if upstream_port is None:
        write(os.path.join(d, "index.html"), BODY.decode())
        server = """
  server {{
    listen 127.0.0.1:{listen} reuseport backlog=4096;
    root {d};
    location / {{ try_files /index.html =404; }}
  }}
  server {{
    listen 127.0.0.1:{status};
    location / {{ stub_status; }}
  }}""".format(listen=listen, d=d, status=status_port)
    else:
        server = """
  upstream backend {{
    server 127.0.0.1:{up};
    keepalive 64;
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{listen} reuseport backlog=4096;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }}
  }}""".format(listen=listen, up=upstream_port)
    conf = """# written by scripts/bench
worker_processes 2;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  default_type text/html;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
{temps}
{server}
}}
""".format(d=d, temps=temps, server=server)
    path = os.path.join(d, "nginx.conf")
    write(path, conf)
    return path


def sesame_conf(run, port, redis_port, mock, upstream, cache_ttl=None):
    key = os.path.join(run, "session.key")
    write(key, SESSION_KEY + "\n", 0o600)
    secret = os.path.join(run, "a.secret")
    write(secret, CLIENT_SECRET + "\n", 0o600)
    cache = "cache_ttl = %s" % cache_ttl if cache_ttl is not None else ""
    return """# written by scripts/bench
[server]
listen = 127.0.0.1:{port}
workers = 2
error_log = {run}/sesame-{port}-error.log
access_log = off
log_level = warn
client_signin_rate = off

[redis]
address = 127.0.0.1:{redis_port}

[session]
secret_file = {key}
{cache}

[provider franceconnect]
issuer = {issuer}
client_id = ville-a-client
client_secret_file = {secret}
ca_file = {ca}
scopes = openid given_name family_name birthdate

[tenant ville-a]
display_name = Ville d'Arbre
hosts = ville-a.localhost
public_url = http://ville-a.localhost:{port}
provider = franceconnect

[route accueil]
tenant = ville-a
path = /
upstream = {upstream}
access = public

[route demarches]
tenant = ville-a
path = /demarches
upstream = {upstream}
claims = given_name family_name birthdate
""".format(port=port, run=run, redis_port=redis_port, key=key, cache=cache, issuer=mock.issuer,
           secret=secret, ca=mock.ca_file, upstream=upstream)


# ---------------------------------------------------------------- the benchmark

def fmt_ms(v):
    return "%.2f ms" % v if v >= 1 else "%.0f µs" % (v * 1e3)


class Bench:
    def __init__(self, args):
        self.run = args.run_dir
        os.chmod(self.run, 0o711)  # nginx workers (nobody) traverse it
        self.srcdir = args.srcdir
        self.sesame_bin = os.path.join(args.builddir, "sesame")
        self.duration = env_int("BENCH_DURATION", 10)
        self.warmup = env_int("BENCH_WARMUP", 2)
        self.threads = env_int("BENCH_THREADS", 2)
        self.conns = env_int("BENCH_CONNECTIONS", 50)
        self.nlogins = env_int("BENCH_LOGINS", 200)
        self.syscalls = env_int("BENCH_SYSCALLS", 1) != 0
        self.repeat = max(1, env_int("BENCH_REPEAT", 1))
        self.nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.procs = Procs(self.run)
        self.mock = None
        self.results = []
        sys.path.insert(0, os.path.join(self.srcdir, "tests", "mockfc"))
        sys.path.insert(0, os.path.join(self.srcdir, "tests", "integration"))
        os.environ["SESAME_BUILDDIR"] = args.builddir
        import harness
        import signin_env
        self.harness, self.signin_env = harness, signin_env

    # -- setup

    def header(self):
        nv = subprocess.run([self.nginx, "-v"], capture_output=True, text=True).stderr.strip()
        wv = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
        wv = wv.split(" Copyright")[0]
        rev = subprocess.run(["git", "-C", self.srcdir, "describe", "--always", "--dirty"],
                             capture_output=True, text=True).stdout.strip() or "?"
        model = "?"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
        ncpu = os.cpu_count()
        print("Sésame benchmark, %s" % time.strftime("%Y-%m-%d %H:%M"))
        print("  machine : %d CPU (%s), Linux %s" % (ncpu, model, platform.release()))
        print("  tools   : %s, %s" % (nv, wv))
        print("  sesame  : %s, %s" % (rev, self.sesame_bin))
        print("  load    : %s (1/5/15 min) before starting" % load)
        print("  wrk     : %d threads, %d connections, %d s per measurement after %d s of warm-up"
              % (self.threads, self.conns, self.duration, self.warmup)
              + (", %d runs each (medians shown)" % self.repeat if self.repeat > 1 else ""))
        print("  note    : wrk, the server measured, the upstream nginx and redis all run on")
        print("            these %d cores over loopback: requests/s is what the whole machine"
              % ncpu)
        print("            sustains; CPU µs per request is the measured server's own cost.")
        print()

    def start_nginx(self, name, port, **kw):
        conf = nginx_conf(os.path.join(self.run, name), port, **kw)
        d = os.path.dirname(conf)
        p = self.procs.start([self.nginx, "-p", d, "-c", conf, "-e",
                              os.path.join(d, "error.log")], name)
        wait_port(port, p, name)
        return p

    def start_stack(self):
        self.up_port, self.status_port = free_port(), free_port()
        up = self.start_nginx("nginx-upstream", self.up_port, status_port=self.status_port)
        wait_port(self.status_port, up, "nginx-upstream status")
        self.proxy_port = free_port()
        px = self.start_nginx("nginx-proxy", self.proxy_port, upstream_port=self.up_port)
        self.redis_port = free_port()
        rdir = os.path.join(self.run, "redis")
        os.makedirs(rdir)
        rd = self.procs.start(["redis-server", "--port", str(self.redis_port), "--bind",
                               "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", rdir],
                              "redis")
        wait_port(self.redis_port, rd, "redis-server")
        # The mock's redirect URIs name sesame's port: take it now.
        self.gw_port = free_port()
        self.mock = self.harness.start_mockfc(os.path.join(self.run, "mockfc"),
                                              self.signin_env.clients_for(self.gw_port))
        self.procs.adopt(self.mock.pid)
        time.sleep(0.3)  # nginx workers forked
        self.g_up = Group(up.pid, with_children=True)
        self.g_px = Group(px.pid, with_children=True)
        self.g_rd = Group(rd.pid)
        for name, g in (("upstream", self.g_up), ("proxy", self.g_px)):
            if len(g.pids) != 3:
                raise RuntimeError("nginx %s: expected a master and 2 workers, got %s"
                                   % (name, g.pids))

    def start_gateway(self, name, cache_ttl=None):
        """sesame on the port the mock knows (one instance at a time)."""
        port = self.gw_port
        conf = os.path.join(self.run, name + ".conf")
        write(conf, sesame_conf(self.run, port, self.redis_port, self.mock,
                                "http://127.0.0.1:%d" % self.up_port, cache_ttl))
        p = self.procs.start([self.sesame_bin, "-c", conf], name)
        wait_port(port, p, name)
        time.sleep(0.3)  # every worker listening
        return p, port

    # -- measurements

    def measure_once(self, label, wrk_args, groups, via_upstream):
        """One measured wrk run; returns its figures."""
        c0 = [g.cpu() for g in groups]
        n0 = upstream_requests(self.status_port)
        m0 = machine_cpu()
        r = run_wrk(*wrk_args, self.duration)
        m1 = machine_cpu()
        n1 = upstream_requests(self.status_port)
        c1 = [g.cpu() for g in groups]
        n = r["requests"]
        if n == 0 or r["non2xx"]:
            raise RuntimeError("%s: %d of %d responses were errors" % (label, r["non2xx"], n))
        reached = (n1 - n0 - 1) / n  # minus the second status request
        if reached < 0.999:
            raise RuntimeError("%s: only %.1f%% of the requests reached the upstream (redirects "
                               "or errors instead of the page)" % (label, 100 * reached))
        cpu = [y - x for x, y in zip(c0, c1)]
        tasks, irq, steal, total = [y - x for x, y in zip(m0, m1)]
        r.update(server_us=cpu[0] / n * 1e6,
                 upstream_us=cpu[1] / n * 1e6 if via_upstream else None,
                 redis_us=cpu[-1] / n * 1e6, wrk_us=r["wrk_cpu"] / n * 1e6,
                 irq_us=irq / n * 1e6,
                 busy=(tasks + irq + steal) / total if total else 0.0,
                 # cores used by processes not measured here (the mock, other jobs)
                 others=max(0.0, tasks - sum(cpu) - r["wrk_cpu"]) / r["elapsed"])
        return r

    def measure(self, label, port, host, path, server, cookie=None, via_upstream=True):
        """Warm-up, then BENCH_REPEAT measured runs (the median of each
        figure is kept, the worst 'others'), then the system call count."""
        check_once(port, host, path, cookie)
        url = "http://127.0.0.1:%d%s" % (port, path)
        wrk_args = (url, host, cookie, self.threads, self.conns)
        if self.warmup > 0:
            run_wrk(*wrk_args, self.warmup)
        groups = [server] + ([self.g_up] if via_upstream else []) + [self.g_rd]
        runs = [self.measure_once(label, wrk_args, groups, via_upstream)
                for _ in range(self.repeat)]
        check_once(port, host, path, cookie)
        r = {"label": label, "runs": runs}
        for k in ("rps", "p50", "p99", "server_us", "upstream_us", "redis_us", "wrk_us",
                  "irq_us", "busy"):
            values = sorted(x[k] for x in runs if x[k] is not None)
            r[k] = values[len(values) // 2] if values else None
        r["others"] = max(x["others"] for x in runs)
        if self.syscalls:
            r["syscalls"] = syscall_profile(self.procs, self.run, label.split(".")[0], server,
                                            self.status_port, wrk_args, 2)
        self.results.append(r)
        spread = ""
        if self.repeat > 1:
            spread = "  (req/s %s)" % " ".join("%.0f" % x["rps"] for x in runs)
        print("  %-46s %7.0f req/s  p50 %-9s p99 %-9s %6.1f µs/req%s" % (
            label, r["rps"], fmt_ms(r["p50"]), fmt_ms(r["p99"]), r["server_us"], spread))
        sys.stdout.flush()
        return r

    def sign_in(self, port, login):
        b = self.signin_env.Browser(port)
        resp, _ = self.signin_env.sign_in(b, self.mock, port, login)
        jar = b.cookies.get("ville-a.localhost", {})
        if resp.status not in (302, 303) or "sesame" not in jar:
            raise RuntimeError("sign-in as %s failed: status %d" % (login, resp.status))
        return "sesame=" + jar["sesame"]

    def logins(self, gw, port):
        print("  5. %d FranceConnect sign-ins through the mock (sequential)..." % self.nlogins,
              end="")
        sys.stdout.flush()
        g = Group(gw.pid)
        c0, r0, t0 = g.cpu(), self.g_rd.cpu(), time.monotonic()
        for i in range(self.nlogins):
            self.sign_in(port, LOGINS[i % len(LOGINS)])
        c1, r1, t1 = g.cpu(), self.g_rd.cpu(), time.monotonic()
        n = self.nlogins
        self.login = {"us": (c1 - c0) / n * 1e6, "redis_us": (r1 - r0) / n * 1e6,
                      "wall_ms": (t1 - t0) / n * 1e3, "cpu_s": c1 - c0}
        print(" %.0f µs of sesame CPU each" % self.login["us"])

    def run_all(self):
        self.header()
        self.start_stack()
        print("Measuring (%d s each)..." % self.duration)
        self.measure("1. upstream nginx, static file (direct)", self.up_port,
                     "127.0.0.1:%d" % self.up_port, "/", self.g_up, via_upstream=False)
        self.r2 = self.measure("2. nginx proxy_pass, keep-alive upstream", self.proxy_port,
                               "127.0.0.1:%d" % self.proxy_port, "/", self.g_px)
        gw, port = self.start_gateway("sesame")
        host = "ville-a.localhost:%d" % port
        g_gw = Group(gw.pid)
        self.r3 = self.measure("3. sesame, public route", port, host, "/", g_gw)
        cookie = self.sign_in(port, "marie")
        self.record = session_record_size(self.redis_port)
        self.r4 = self.measure("4. sesame, required route, session cookie", port, host,
                               "/demarches", g_gw, cookie=cookie)
        self.logins(gw, port)
        self.procs.stop(gw)
        gw, port = self.start_gateway("sesame-nocache", cache_ttl="0")
        self.r4b = self.measure("4b. as 4 with cache_ttl = 0 (Redis GET each)", port,
                                "ville-a.localhost:%d" % port, "/demarches", Group(gw.pid),
                                cookie=cookie)
        self.procs.stop(gw)
        self.report()

    # -- output

    def report(self):
        ncpu = os.cpu_count()
        print()
        print("Results (%d s each, wrk -t%d -c%d, loopback; wrk and every server share the "
              "%d cores):" % (self.duration, self.threads, self.conns, ncpu))
        line = "  %-46s %7s %8s %8s %7s %8s %6s %6s %7s %5s %6s"
        print(line % ("", "req/s", "p50", "p99", "server", "upstream", "redis", "wrk",
                      "softirq", "busy", "others"))
        print(line % ("", "", "", "", "µs/req", "µs/req", "µs/req", "µs/req", "µs/req", "",
                      "cores"))
        for r in self.results:
            print(line % (
                r["label"], "%.0f" % r["rps"], fmt_ms(r["p50"]), fmt_ms(r["p99"]),
                "%.1f" % r["server_us"],
                "-" if r["upstream_us"] is None else "%.1f" % r["upstream_us"],
                "%.1f" % r["redis_us"], "%.1f" % r["wrk_us"], "%.1f" % r["irq_us"],
                "%.0f%%" % (100 * r["busy"]), "%.2f" % r["others"]))
        lg = self.login
        print(line % ("5. one FranceConnect sign-in", "", "", "", "%.0f" % lg["us"], "",
                      "%.0f" % lg["redis_us"], "", "", "", ""))
        print()
        print("  server   CPU of the measured server per request: nginx master + 2 workers (1, 2),")
        print("           the sesame process, all threads (3, 4, 4b), per sign-in for 5;")
        print("  upstream the static nginx behind the proxy; redis: redis-server; wrk: the load")
        print("           generator (getrusage); softirq: interrupt time charged to no process")
        print("           (mostly loopback TCP delivery); busy: share of the %d cores in use;"
              % ncpu)
        print("  others   cores used meanwhile by processes not measured here (the idle mock,")
        print("           other jobs): above ~0.05 the figures are disturbed.")
        print("  5: %d sequential sign-ins, %.1f ms each (wall time, bound by the Python mock);"
              % (self.nlogins, lg["wall_ms"]))
        print("     sesame CPU %.2f s in all; clock tick %d ms, so +/- %.0f µs per sign-in."
              % (lg["cpu_s"], 1000 // TICK, 2e6 / TICK / self.nlogins))
        if self.record:
            print("  session record stored in Redis: %d bytes (encrypted; the mock's ID token "
                  "inside)" % self.record)
        print()
        if any(r.get("syscalls") for r in self.results):
            print("System calls per request of the measured server (strace -c -f during 2 more "
                  "seconds")
            print("of the same load; counts only, strace slows the traced process):")
            for r in self.results:
                sc = r.get("syscalls")
                if not sc:
                    print("  %-46s (strace could not attach)" % r["label"])
                    continue
                top = sorted(sc.items(), key=lambda kv: -kv[1])
                shown = ", ".join("%s %.2f" % kv for kv in top if kv[1] >= 0.05)
                print("  %-46s %5.1f  %s" % (r["label"], sum(sc.values()), shown))
            print()
        print("Sésame relative to nginx proxy_pass (2):")
        for r in (self.r3, self.r4, self.r4b):
            print("  %-46s throughput %5.1f%%   CPU per request x%.2f" % (
                r["label"], 100 * r["rps"] / self.r2["rps"], r["server_us"] / self.r2["server_us"]))
        print("  issue 4's target: a signed-in request within 10% of nginx's throughput "
              "(4 at 90% or more)")
        print("  one sign-in costs as much sesame CPU as %.0f signed-in requests (4)"
              % (lg["us"] / self.r4["server_us"]))
        print("  reference given in issue 4 for nginx proxy_pass on 2 cores: ~36k req/s, "
              "~27 µs CPU/request")
        worst = max(r["others"] for r in self.results)
        if worst > 0.1:
            print()
            print("WARNING: other processes used up to %.2f of the %d cores during the "
                  "measurements" % (worst, ncpu))
            print("(column 'others'): the figures are disturbed; rerun on a quiet machine.")

    def stop(self):
        self.procs.stop_all()
        if self.mock is not None:
            self.mock.stop()
            try:
                os.killpg(self.mock.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dir", required=True, help="empty directory for configurations, logs")
    ap.add_argument("--srcdir", required=True, help="the source tree (tests/ harness)")
    ap.add_argument("--builddir", required=True, help="where the sesame binary is")
    args = ap.parse_args()

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    bench = Bench(args)
    try:
        bench.run_all()
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print("\nbench: %s" % e, file=sys.stderr)
        return 1
    finally:
        bench.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
