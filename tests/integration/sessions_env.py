"""Helpers for the session tests (test_sessions.py): several `sesame`
instances sharing one mock FranceConnect and one echo upstream, Redis that can
be paused, killed and restarted with its data, a Sentinel topology (one
master, one replica, three sentinels), and plain HTTP clients that keep their
connection (a kept connection stays on one worker of the daemon, so its
in-process session cache is the one exercised).

Everything runs on 127.0.0.1 and is stopped by the fixtures that start it.
"""

import base64
import hashlib
import http.client
import os
import re
import signal
import socket
import subprocess
import time

import signin_env  # noqa: F401  (puts tests/mockfc on sys.path)
import harness  # noqa: E402
from sesame_env import Echo, Proc, Redis, Sesame, free_port, wait_port  # noqa: E402
from signin_env import CLIENTS, Browser, gateway_conf, sign_in  # noqa: E402

HOST = "ville-a.localhost"
PREFIX = "sesame:"
BINDIR = os.environ.get("SESAME_BUILDDIR", signin_env.HERE + "/../..")


def tool_binary():
    path = os.path.join(BINDIR, "sesame-accounts")
    if not os.path.exists(path):
        raise RuntimeError("sesame-accounts not found at %s (build first)" % path)
    return path


def clients_for_ports(ports):
    """The mock's clients, with the redirect URIs of every gateway port."""
    out = []
    for c, host in zip(CLIENTS, ["ville-a.localhost", "ville-b.localhost"]):
        d = dict(c)
        d["redirect_uris"] = ["http://%s:%d/sesame/callback" % (host, p) for p in ports]
        d["post_logout_redirect_uris"] = ["http://%s:%d/sesame/logout/callback" % (host, p)
                                          for p in ports]
        out.append(d)
    return out


class Base:
    """The mock FranceConnect and the echo upstream, plus `nports` gateway
    ports registered at the mock (sign-in works through any of them)."""

    def __init__(self, tmp, nports):
        self.tmp = tmp
        self.ports = []
        while len(self.ports) < nports:
            p = free_port()
            if p not in self.ports:
                self.ports.append(p)
        self.mock = harness.start_mockfc(tmp, clients_for_ports(self.ports))
        self.echo = Echo(tmp)
        self.next_port = 0

    def take_port(self):
        p = self.ports[self.next_port]
        self.next_port += 1
        return p

    def stop(self):
        for p in (self.echo, self.mock):
            try:
                p.stop()
            except Exception:  # noqa: BLE001
                pass


def redis_section(address=None, sentinels=None, master_name="sesame", command_timeout="500ms",
                  connect_timeout="500ms"):
    lines = ["[redis]"]
    if sentinels:
        lines.append("sentinels = " + " ".join("127.0.0.1:%d" % p for p in sentinels))
        lines.append("master_name = " + master_name)
    else:
        lines.append("address = " + address)
    lines.append("command_timeout = " + command_timeout)
    lines.append("connect_timeout = " + connect_timeout)
    return "\n".join(lines) + "\n"


class Gateway:
    """One `sesame` process of the test configuration (signin_env's tenants
    and routes, 2 workers), with its own [redis] section and [session]
    options."""

    WORKERS = 2

    def __init__(self, base, name, redis_text, session_text="", port=None):
        self.base = base
        self.name = name
        self.port = port or base.take_port()
        self.tmp = os.path.join(base.tmp, name)
        os.makedirs(self.tmp, exist_ok=True)
        text = gateway_conf(self.tmp, self.port, 0, base.mock, base.echo.url,
                            extra_session=session_text)
        text, n = re.subn(r"\[redis\]\n.*?\n\n", lambda m: redis_text + "\n", text, count=1,
                          flags=re.S)
        assert n == 1
        self.conf_path = os.path.join(self.tmp, "sesame.conf")
        self.gw = Sesame(self.tmp, text, name="sesame", port=self.port)

    def alive(self):
        return self.gw.proc.alive()

    def errors(self):
        return self.gw.errors()

    def connected_to(self, redis_port):
        """How many times a worker's main Redis connection was established
        with 127.0.0.1:redis_port (the daemon logs each one at info)."""
        return self.errors().count("redis: connected to 127.0.0.1:%d\n" % redis_port)

    def url(self, path, host=HOST):
        return "http://%s:%d%s" % (host, self.port, path)

    def browser(self):
        return Browser(self.port)

    def sign_in(self, login):
        """A new browser signed in as `login` through this instance; returns
        (browser, cookie value)."""
        b = Browser(self.port)
        r, _ = sign_in(b, self.base.mock, self.port, login)
        assert r.status == 303, (r.status, r.body[:500])
        return b, b.cookies[HOST]["sesame"]

    def stop(self):
        self.gw.stop()


# ---------------------------------------------------------------- HTTP

class Reply:
    def __init__(self, status, headers, body, elapsed):
        self.status, self.headers, self.body, self.elapsed = status, headers, body, elapsed

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "<Reply %d, %d bytes, %.3fs>" % (self.status, len(self.body), self.elapsed)


NAVIGATE = {"Accept": "text/html,application/xhtml+xml", "Sec-Fetch-Mode": "navigate"}
XHR = {"Accept": "application/json", "X-Requested-With": "XMLHttpRequest"}


class Client:
    """HTTP/1.1 with one kept-alive connection to a gateway (reopened only if
    the server closes it); `reopened` counts reconnections."""

    def __init__(self, port, cookie=None, host=HOST, timeout=15):
        self.port, self.cookie, self.host, self.timeout = port, cookie, host, timeout
        self.conn = None
        self.reopened = -1

    def get(self, path, headers=None, cookie_header=None):
        h = {"Host": "%s:%d" % (self.host, self.port)}
        h.update(NAVIGATE)
        if cookie_header is not None:
            h["Cookie"] = cookie_header
        elif self.cookie:
            h["Cookie"] = "sesame=" + self.cookie
        h.update(headers or {})
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            self.reopened += 1
        t0 = time.monotonic()
        try:
            self.conn.request("GET", path, headers=h)
            r = self.conn.getresponse()
            body = r.read()
        except (http.client.HTTPException, ConnectionError):
            self.close()
            raise
        reply = Reply(r.status, r.getheaders(), body, time.monotonic() - t0)
        if r.will_close:
            self.close()
        return reply

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def get(port, path, cookie=None, headers=None, cookie_header=None, host=HOST):
    """One request on a new connection."""
    c = Client(port, cookie, host=host)
    try:
        return c.get(path, headers=headers, cookie_header=cookie_header)
    finally:
        c.close()


def raw_get(port, path, header_lines, host=HOST, timeout=10):
    """One request written byte for byte (header_lines: list of bytes without
    CRLF). Returns (status or None, raw response)."""
    head = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + ("%s:%d" % (host, port)).encode() + \
        b"\r\nAccept: text/html\r\nSec-Fetch-Mode: navigate\r\nConnection: close\r\n"
    data = head + b"".join(l + b"\r\n" for l in header_lines) + b"\r\n"
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    chunks = []
    try:
        s.sendall(data)
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    finally:
        s.close()
    raw = b"".join(chunks)
    line = raw.split(b"\r\n", 1)[0].split(b" ")
    return (int(line[1]) if len(line) > 1 and line[1].isdigit() else None), raw


def logout(browser, port):
    """Signs out through the logout page (GET, then POST with its token).
    Returns the POST's response."""
    base = "http://%s:%d" % (HOST, port)
    browser.port = port
    page = browser.get(base + "/sesame/logout")
    assert page.status == 200, page.status
    m = re.search(r'name="csrf" value="([^"]+)"', page.body.decode())
    assert m, page.body.decode()[:2000]
    t0 = time.monotonic()
    r = browser.request("POST", base + "/sesame/logout", body="csrf=" + m.group(1),
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    return Reply(r.status, r.getheaders(), r.body, time.monotonic() - t0)


def session_key(cookie, prefix=PREFIX):
    """The Redis key of a session cookie: prefix + "s:" + hex(SHA-256(raw id))."""
    raw = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))
    assert len(raw) == 32
    return prefix + "s:" + hashlib.sha256(raw).hexdigest()


def index_key(account, tenant="ville-a", prefix=PREFIX):
    return "%sa:%s:%s" % (prefix, tenant, account)


def sub_of(login, client_id="ville-a-client"):
    """The account id of a citizen signed in without an account plugin (the
    provider's sub)."""
    return harness.expected_sub(client_id, login)


def wait_until(pred, timeout, step=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("%s not met within %.1fs" % (what, timeout))
        time.sleep(step)


# ---------------------------------------------------------------- Redis

def redis_cli(port, *args):
    out = subprocess.run(["redis-cli", "-p", str(port), "--raw"] + [str(a) for a in args],
                         capture_output=True, timeout=10)
    return out.stdout.decode("utf-8", "replace").strip()


class DurableRedis(Redis):
    """redis-server with an append-only file, so that a killed server
    restarted on the same port and directory has its data back."""

    def start(self):
        self.proc = Proc(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                          "--dir", self.dir],
                         os.path.join(self.dir, "redis.log"))
        wait_port(self.port, proc=self.proc.p)

    def pause(self):
        self.proc.signal(signal.SIGSTOP)

    def resume(self):
        self.proc.signal(signal.SIGCONT)

    def kill(self):
        self.proc.signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        try:
            self.proc.signal(signal.SIGCONT)
        except ProcessLookupError:
            pass
        super().stop()


class SentinelSet:
    """One master, one replica and three sentinels (quorum 2) on loopback,
    master name `name`."""

    def __init__(self, tmp, name="sesame", down_after_ms=1000, failover_timeout_ms=3000):
        self.tmp = tmp
        self.name = name
        self.procs = []
        self.master = self._server("master")
        self.replica = self._server("replica", replicaof=self.master)
        self.sentinels = []
        for i in range(3):
            port = free_port()
            d = os.path.join(tmp, "sentinel-%d" % port)
            os.makedirs(d, exist_ok=True)
            conf = os.path.join(d, "sentinel.conf")
            with open(conf, "w") as f:
                f.write("port %d\nbind 127.0.0.1\ndir %s\n"
                        "sentinel monitor %s 127.0.0.1 %d 2\n"
                        "sentinel down-after-milliseconds %s %d\n"
                        "sentinel failover-timeout %s %d\n"
                        "sentinel parallel-syncs %s 1\n"
                        % (port, d, name, self.master[0], name, down_after_ms, name,
                           failover_timeout_ms, name))
            p = Proc(["redis-server", conf, "--sentinel"], os.path.join(d, "sentinel.log"))
            self.procs.append(p)
            wait_port(port, proc=p.p)
            self.sentinels.append((port, p))

    def _server(self, role, replicaof=None):
        port = free_port()
        d = os.path.join(self.tmp, "%s-%d" % (role, port))
        os.makedirs(d, exist_ok=True)
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", d]
        if replicaof:
            argv += ["--replicaof", "127.0.0.1", str(replicaof[0])]
        p = Proc(argv, os.path.join(d, "redis.log"))
        self.procs.append(p)
        wait_port(port, proc=p.p)
        return (port, p)

    @property
    def sentinel_ports(self):
        return [p for p, _ in self.sentinels]

    def sentinel_view(self, port):
        """SENTINEL MASTER as a dict (empty when the sentinel does not answer)."""
        out = redis_cli(port, "SENTINEL", "MASTER", self.name).split("\n")
        return dict(zip(out[0::2], out[1::2])) if len(out) > 1 else {}

    def ready(self):
        """Every sentinel knows the replica and the two other sentinels, and
        the replica's link to the master is up."""
        for port in self.sentinel_ports:
            v = self.sentinel_view(port)
            if v.get("num-other-sentinels") != "2" or v.get("num-slaves") != "1":
                return False
        return "master_link_status:up" in redis_cli(self.replica[0], "INFO", "replication")

    def master_port(self, sentinel_port=None):
        out = redis_cli(sentinel_port or self.sentinel_ports[0], "SENTINEL",
                        "get-master-addr-by-name", self.name).split("\n")
        return int(out[1]) if len(out) == 2 and out[1].isdigit() else None

    def stop(self):
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception:  # noqa: BLE001
                pass
