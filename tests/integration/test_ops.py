"""Running Sésame in production: Prometheus metrics on their own listener,
readiness following Redis, systemd notifications, signals (SIGHUP reloads,
SIGUSR1 reopens logs), a second instance refused, the journal.

Real processes: redis-server, the mock FranceConnect, the echo upstream and
sesame. The metrics are parsed with Debian's python3-prometheus-client."""

import base64
import collections
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse

import pytest
from prometheus_client.parser import text_string_to_metric_families

import signin_env  # noqa: F401  (puts tests/mockfc on sys.path)
from sesame_env import (Proc, Sesame, check_config, free_port, sanitizer_report, sesame_binary,
                        wait_port)
from signin_env import Browser, Stack, sign_in

WORKERS = 2  # signin_env.gateway_conf


# ---------------------------------------------------------------- helpers

def ops_get(port, path, method="GET", timeout=5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request(method, path)
    r = c.getresponse()
    r.body = r.read()
    c.close()
    return r


def scrape(port):
    r = ops_get(port, "/metrics")
    assert r.status == 200
    assert r.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    samples = {}
    for family in text_string_to_metric_families(r.body.decode("utf-8")):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def deltas(before, after, name):
    """{labels tuple: after - before} for every series of `name` that moved."""
    out = {}
    for (n, labels), v in after.items():
        if n == name:
            d = v - before.get((n, labels), 0.0)
            if d:
                out[labels] = d
    return out


def poll(fn, timeout, interval=0.05):
    """Calls fn until it returns a true value; returns (value, seconds)."""
    start = time.monotonic()
    while True:
        v = fn()
        if v:
            return v, time.monotonic() - start
        if time.monotonic() - start > timeout:
            return None, time.monotonic() - start
        time.sleep(interval)


def ready_status(port):
    try:
        return ops_get(port, "/ready", timeout=2).status
    except OSError:
        return None


# Route labels of the requests the tests send, by path prefix (longest first).
ROUTES = [("/sesame/", "(sesame)"), ("/demarches", "a-demarches"), ("/mort", "a-mort"), ("/", "a-home")]
TENANTS = {"ville-a.localhost": "ville-a"}


class CountingBrowser(Browser):
    """A Browser that tallies what it sent the way sesame_requests_total
    labels it: (tenant, route, status class)."""

    def __init__(self, port, tally):
        super().__init__(port)
        self.tally = tally

    def request(self, method, url, **kw):
        r = super().request(method, url, **kw)
        u = urllib.parse.urlsplit(url)
        path = u.path or "/"
        route = next(name for prefix, name in ROUTES if path.startswith(prefix))
        key = (("route", route), ("status", "%dxx" % (r.status // 100)),
               ("tenant", TENANTS[u.hostname]))
        self.tally[key] += 1
        return r


class OpsStack(Stack):
    """The sign-in stack with metrics_listen and a route to a dead upstream."""

    def __init__(self, tmp):
        self.metrics_port = free_port()
        self.dead_port = free_port()  # nothing listens there
        super().__init__(tmp, extra_routes="""
[route a-mort]
tenant = ville-a
path = /mort
upstream = http://127.0.0.1:%d
access = public
""" % self.dead_port)
        wait_port(self.metrics_port, proc=self.gw.proc.p)

    def conf_text(self, port=None, **kw):
        text = super().conf_text(port, **kw)
        return text.replace("[server]\n", "[server]\nmetrics_listen = 127.0.0.1:%d\n"
                            % self.metrics_port, 1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = OpsStack(str(tmp_path_factory.mktemp("ops")))
    yield s
    s.stop()


def wait_ready(stack, timeout=15):
    ok, took = poll(lambda: ready_status(stack.metrics_port) == 200, timeout)
    assert ok, ops_get(stack.metrics_port, "/ready").body
    return took


def bogus_cookie():
    return base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()


# ---------------------------------------------------------------- metrics

def test_metrics_move_by_what_was_sent(stack):
    wait_ready(stack)
    port = stack.port
    base = "http://ville-a.localhost:%d" % port
    before = scrape(stack.metrics_port)
    tally = collections.Counter()

    # proxied public requests, and one to an upstream that refuses connections
    b = CountingBrowser(port, tally)
    for _ in range(3):
        assert b.get(base + "/").status == 200
    assert b.get(base + "/mort").status == 502
    # two sign-ins with the mock, each followed by two signed-in requests
    callbacks = []
    for login in ("marie", "jean"):
        sb = CountingBrowser(port, tally)
        r, callback = sign_in(sb, stack.mock, port, login)
        assert r.status == 303, r.body[:300]
        callbacks.append((sb, callback))
        for _ in range(2):
            assert sb.get(base + "/demarches").status == 200
    # refusals: the callback URL replayed, an ID token whose signature fails
    sb, callback = callbacks[0]
    assert sb.get(callback).status == 400
    stack.mock.scenario("bad_signature")
    try:
        r, _ = sign_in(CountingBrowser(port, tally), stack.mock, port, "marie")
        assert r.status == 401
    finally:
        stack.mock.scenario("none")

    after = scrape(stack.metrics_port)
    assert deltas(before, after, "sesame_requests_total") == dict(tally)
    sent = sum(tally.values())
    assert value(after, "sesame_request_duration_seconds_count") - \
        value(before, "sesame_request_duration_seconds_count") == sent
    assert value(after, "sesame_request_duration_seconds_bucket", le="+Inf") - \
        value(before, "sesame_request_duration_seconds_bucket", le="+Inf") == sent
    proxied = tally[(("route", "a-home"), ("status", "2xx"), ("tenant", "ville-a"))] + \
        tally[(("route", "a-demarches"), ("status", "2xx"), ("tenant", "ville-a"))]
    assert proxied == 7
    assert value(after, "sesame_upstream_duration_seconds_count") - \
        value(before, "sesame_upstream_duration_seconds_count") == proxied
    assert deltas(before, after, "sesame_upstream_connect_errors_total") == {
        (("route", "a-mort"), ("tenant", "ville-a")): 1}
    assert deltas(before, after, "sesame_signin_redirects_total") == {
        (("provider", "franceconnect"),): 3}
    assert deltas(before, after, "sesame_signins_total") == {
        (("outcome", "success"), ("provider", "franceconnect"), ("reason", "none")): 2,
        (("outcome", "refused"), ("provider", "franceconnect"), ("reason", "invalid_token")): 1,
        (("outcome", "refused"), ("provider", "(none)"), ("reason", "state")): 1,
    }
    # every signed-in request looked its session up once: in the worker's
    # cache or, on the other worker, in Redis
    lookups = deltas(before, after, "sesame_session_cache_lookups_total")
    assert sum(lookups.values()) == 4, lookups
    assert set(lookups) <= {(("result", "hit"),), (("result", "miss"),)}
    # Redis commands were timed; nothing failed, nothing reconnected
    assert value(after, "sesame_redis_command_duration_seconds_count") > \
        value(before, "sesame_redis_command_duration_seconds_count")
    assert deltas(before, after, "sesame_redis_command_errors_total") == {}
    assert deltas(before, after, "sesame_redis_reconnects_total") == {}
    assert value(after, "sesame_redis_disconnected_workers") == 0
    assert value(after, "sesame_ready") == 1
    assert value(after, "sesame_build_info", version="0.1.0") == 1
    assert value(after, "sesame_plugin_queue_length") == 0
    # the pool keeps the connections to the echo upstream (at most one per
    # worker here: requests are sequential)
    assert 1 <= value(after, "sesame_upstream_pool_idle_connections") <= WORKERS
    opened, _ = poll(lambda: value(scrape(stack.metrics_port), "sesame_client_connections") == 0, 5)
    assert opened

    # Redis paused (SIGSTOP): session lookups fail with 503 and Retry-After,
    # readiness follows, and the clients reconnect once it runs again
    before = after
    tally.clear()
    b = CountingBrowser(port, tally)
    os.kill(stack.redis.proc.pid, signal.SIGSTOP)
    try:
        # an unresponsive Redis is noticed by the idle PING (every second)
        # after command_timeout (500 ms here)
        down, took = poll(lambda: ready_status(stack.metrics_port) == 503, 5)
        assert down and took < 3.0, took
        for _ in range(2):
            r = b.get(base + "/demarches", headers={"Cookie": "sesame=" + bogus_cookie()})
            assert r.status == 503
            assert r.getheader("Retry-After") == "5"
        r = b.get(base + "/sesame/health")
        assert r.status == 200 and r.body == b"ok\n"
    finally:
        os.kill(stack.redis.proc.pid, signal.SIGCONT)
    wait_ready(stack)
    after = scrape(stack.metrics_port)
    assert deltas(before, after, "sesame_requests_total") == dict(tally)
    assert dict(tally) == {
        (("route", "a-demarches"), ("status", "5xx"), ("tenant", "ville-a")): 2,
        (("route", "(sesame)"), ("status", "2xx"), ("tenant", "ville-a")): 1,
    }
    # the two lookups and the health PINGs that timed out
    assert value(after, "sesame_redis_command_errors_total") - \
        value(before, "sesame_redis_command_errors_total") >= 2
    # the workers that noticed the pause (at least the one that made /ready
    # 503; another may have had no PING due during it) reconnected, and none
    # is left without a connection
    assert value(after, "sesame_redis_reconnects_total") - \
        value(before, "sesame_redis_reconnects_total") >= 1
    assert value(after, "sesame_redis_disconnected_workers") == 0


def test_metrics_listener_is_separate(stack):
    r = ops_get(stack.metrics_port, "/health")
    assert r.status == 200 and r.body == b"ok\n"
    r = ops_get(stack.metrics_port, "/metrics", method="HEAD")
    assert r.status == 200 and r.body == b""
    assert ops_get(stack.metrics_port, "/nothing").status == 404
    r = ops_get(stack.metrics_port, "/metrics", method="POST")
    assert r.status == 405 and r.getheader("Allow") == "GET, HEAD"
    # the citizens' listener does not serve the metrics: on a tenant host
    # /metrics is the route's path, elsewhere the 404 page
    c = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=5)
    c.request("GET", "/metrics", headers={"Host": "unknown.localhost"})
    r = c.getresponse()
    body = r.read()
    c.close()
    assert r.status == 404 and b"sesame_requests_total" not in body


# ---------------------------------------------------------------- readiness

def test_ready_follows_redis(stack):
    wait_ready(stack)
    r = ops_get(stack.metrics_port, "/ready")
    assert r.status == 200 and json.loads(r.body) == {"status": "ready"}
    b = Browser(stack.port)
    r = b.get("http://ville-a.localhost:%d/sesame/ready" % stack.port)
    assert r.status == 200 and json.loads(r.body) == {"status": "ready"}
    stack.redis.proc.signal(signal.SIGTERM)
    stack.redis.proc.wait(timeout=10)
    try:
        down, took = poll(lambda: ready_status(stack.metrics_port) == 503, 5, interval=0.02)
        assert down and took < 1.0, took
        r = ops_get(stack.metrics_port, "/ready")
        assert r.status == 503 and r.getheader("Retry-After") == "5"
        body = json.loads(r.body)
        assert body["status"] == "not ready"
        assert body["problems"] == ["redis: not connected (%d of %d workers)" % (WORKERS, WORKERS)]
        # the same on the tenant hosts; liveness stays ok
        r = b.get("http://ville-a.localhost:%d/sesame/ready" % stack.port)
        assert r.status == 503 and r.getheader("Retry-After") == "5"
        assert json.loads(r.body)["problems"][0].startswith("redis: not connected")
        r = b.get("http://ville-a.localhost:%d/sesame/health" % stack.port)
        assert r.status == 200
        assert value(scrape(stack.metrics_port), "sesame_ready") == 0
    finally:
        stack.redis.proc.stop()
        stack.redis.start()
    took = wait_ready(stack, timeout=10)
    assert took < 8.0
    assert value(scrape(stack.metrics_port), "sesame_redis_disconnected_workers") == 0


# ---------------------------------------------------------------- one process, no OIDC

def plain_conf(tmp, port, name="plain", extra_server="", upstream_port=None):
    return """
[server]
listen = 127.0.0.1:{port}
workers = 2
error_log = {tmp}/{name}-error.log
access_log = {tmp}/{name}-access.log
{extra}

[tenant t]
display_name = T
hosts = t.localhost
public_url = http://t.localhost:{port}

[route r]
tenant = t
path = /
upstream = http://127.0.0.1:{up}
access = public
""".format(port=port, tmp=tmp, name=name, extra=extra_server, up=upstream_port or free_port())


def get_status(port, path="/sesame/health", host="t.localhost"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", path, headers={"Host": host})
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


def run_refused(tmp, conf_text, name):
    path = os.path.join(tmp, name + ".conf")
    with open(path, "w") as f:
        f.write(conf_text)
    out = subprocess.run([sesame_binary(), "-c", path], capture_output=True, timeout=20)
    text = (out.stdout + out.stderr).decode("utf-8", "replace")
    report = sanitizer_report(text)
    assert not report, "sesame: sanitizer report:\n" + report
    return out.returncode, text


def test_second_instance_refused(tmp_path):
    tmp = str(tmp_path)
    port, mport = free_port(), free_port()
    first = Sesame(tmp, plain_conf(tmp, port, "first", "metrics_listen = 127.0.0.1:%d" % mport),
                   name="first", port=port)
    try:
        wait_port(mport, proc=first.proc.p)
        assert get_status(port) == 200
        # the same listen address
        rc, text = run_refused(tmp, plain_conf(tmp, port, "second"), "second")
        assert rc != 0
        assert "listen = 127.0.0.1:%d: another sesame already serves 127.0.0.1:%d" % (port, port) in text
        # another listen address, the same metrics_listen
        rc, text = run_refused(tmp, plain_conf(tmp, free_port(), "third",
                                               "metrics_listen = 127.0.0.1:%d" % mport), "third")
        assert rc != 0 and "metrics_listen = 127.0.0.1:%d" % mport in text
        # the first one still serves alone
        assert get_status(port) == 200
        assert ops_get(mport, "/ready").status == 200
    finally:
        first.stop()
    # a restart right after a stop works (connections of the old one may be
    # in TIME_WAIT)
    again = Sesame(tmp, plain_conf(tmp, port, "again"), name="again", port=port)
    try:
        assert get_status(port) == 200
    finally:
        again.stop()


def test_port_of_another_program_refused(tmp_path):
    """A program listening with SO_REUSEPORT (as nginx with reuseport does)
    would let a plain SO_REUSEPORT bind share its port: refused."""
    tmp = str(tmp_path)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    port = s.getsockname()[1]
    try:
        rc, text = run_refused(tmp, plain_conf(tmp, port, "other"), "other")
        assert rc != 0
        assert "listen = 127.0.0.1:%d: the address is already in use by another process" % port in text
    finally:
        s.close()


def test_metrics_listen_never_a_citizens_listener(tmp_path):
    tmp = str(tmp_path)
    port = free_port()
    path = os.path.join(tmp, "same.conf")
    with open(path, "w") as f:
        f.write(plain_conf(tmp, port, "same", "metrics_listen = 127.0.0.1:%d" % port))
    rc, text = check_config(path)
    assert rc == 1
    assert "metrics_listen: 127.0.0.1:%d is also listen = 127.0.0.1:%d" % (port, port) in text


# ---------------------------------------------------------------- signals

def wait_text(path, text, timeout=5):
    def found():
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return text in f.read()
        except FileNotFoundError:
            return False
    ok, _ = poll(found, timeout)
    return ok


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return None


def test_sigusr1_reopens_logs_and_does_not_reload(tmp_path):
    tmp = str(tmp_path)
    port = free_port()
    gw = Sesame(tmp, plain_conf(tmp, port, "usr1"), name="usr1", port=port)
    try:
        assert wait_text(gw.error_log, "started with 2 worker(s)")
        assert get_status(port) == 200
        assert wait_text(gw.access_log, '"status":200')
        # logrotate: rename, then SIGUSR1
        os.rename(gw.error_log, gw.error_log + ".1")
        os.rename(gw.access_log, gw.access_log + ".1")
        gw.proc.signal(signal.SIGUSR1)
        assert wait_text(gw.error_log, "SIGUSR1: log files reopened")
        assert get_status(port) == 200
        assert wait_text(gw.access_log, '"status":200')
        assert "reopened" not in read(gw.error_log + ".1")
        # a broken configuration on disk is not read by SIGUSR1
        gw.write_conf("[server]\nlisten = nonsense\nthis is not a configuration\n")
        gw.proc.signal(signal.SIGUSR1)
        assert poll(lambda: read(gw.error_log).count("SIGUSR1: log files reopened") == 2, 5)[0]
        assert get_status(port) == 200
        log = read(gw.error_log)
        assert "SIGHUP" not in log and "reload" not in log, log
        assert gw.proc.alive()
        # SIGHUP reloads (refused here) and does not reopen the files
        os.rename(gw.error_log, gw.error_log + ".2")
        gw.proc.signal(signal.SIGHUP)
        assert wait_text(gw.error_log + ".2", "reload refused, the running configuration stays in use")
        time.sleep(0.2)
        assert not os.path.exists(gw.error_log)
        assert get_status(port) == 200
    finally:
        gw.stop()


# ---------------------------------------------------------------- systemd

class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket (NOTIFY_SOCKET)."""

    def __init__(self, path):
        self.path = path
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.s.bind(path)
        self.s.settimeout(0.1)
        self.messages = []

    def wait_for(self, key, timeout=10):
        """Waits for a message holding line `key`; returns its fields."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, m in enumerate(self.messages):
                if key in m.split("\n"):
                    del self.messages[:i + 1]
                    return dict(line.split("=", 1) for line in m.split("\n") if "=" in line)
            try:
                self.messages.append(self.s.recv(4096).decode())
            except socket.timeout:
                pass
        raise AssertionError("no %s in %r" % (key, self.messages))

    def count(self, key, seconds):
        n, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if key in self.s.recv(4096).decode().split("\n"):
                    n += 1
            except socket.timeout:
                pass
        return n

    def close(self):
        self.s.close()


def test_sd_notify(tmp_path, monkeypatch):
    tmp = str(tmp_path)
    ns = NotifySocket(os.path.join(tmp, "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", ns.path)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    port = free_port()
    gw = Sesame(tmp, plain_conf(tmp, port, "notify"), name="notify", port=None, wait=False)
    try:
        ready = ns.wait_for("READY=1")
        assert ready["STATUS"] == "serving with 2 worker(s)"
        # READY=1 only once the workers listen
        assert get_status(port) == 200
        # WATCHDOG=1 every 200 ms (half of WATCHDOG_USEC)
        assert ns.count("WATCHDOG=1", 1.0) >= 3
        gw.reload()
        reloading = ns.wait_for("RELOADING=1")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        ready = ns.wait_for("READY=1")
        assert ready["STATUS"] == "configuration reloaded"
        gw.proc.signal(signal.SIGTERM)
        stopping = ns.wait_for("STOPPING=1")
        assert "STATUS" in stopping
        assert gw.proc.wait(timeout=10) == 0
    finally:
        gw.stop()
        ns.close()


def test_watchdog_not_fed_without_notify_socket(tmp_path, monkeypatch):
    """Without NOTIFY_SOCKET nothing is sent and the daemon runs as before."""
    tmp = str(tmp_path)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    port = free_port()
    gw = Sesame(tmp, plain_conf(tmp, port, "nonotify"), name="nonotify", port=port)
    try:
        time.sleep(0.5)
        assert get_status(port) == 200
    finally:
        gw.stop()


# ---------------------------------------------------------------- journal

def journal_fields(datagram):
    """Fields of a journal native-protocol datagram (text fields only)."""
    out = {}
    for line in datagram.split(b"\n"):
        if b"=" in line:
            k, v = line.split(b"=", 1)
            out[k.decode()] = v.decode("utf-8", "replace")
    return out


def test_error_log_to_the_journal(tmp_path):
    """error_log = journal: sd_journal_send with priorities and fields. The
    daemon runs in its own mount namespace where /run/systemd/journal is a
    directory of the test holding its own socket."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private /run/systemd/journal")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("no mount namespaces here")
    tmp = str(tmp_path)
    jdir = os.path.join(tmp, "journal")
    os.mkdir(jdir)
    js = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    js.bind(os.path.join(jdir, "socket"))
    js.settimeout(0.2)
    port = free_port()
    conf = plain_conf(tmp, port, "journal").replace(
        "error_log = %s/journal-error.log" % tmp, "error_log = journal\nlog_level = debug")
    conf_path = os.path.join(tmp, "journal.conf")
    with open(conf_path, "w") as f:
        f.write(conf)
    script = ("mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/journal && "
              "mount --bind '%s' /run/systemd/journal && exec '%s' -c '%s'"
              % (jdir, sesame_binary(), conf_path))
    proc = Proc(["unshare", "-m", "sh", "-c", script], os.path.join(tmp, "journal.out"))
    entries = []
    try:
        wait_port(port, proc=proc.p)
        # a request to a dead upstream: a warning naming the request and tenant
        assert get_status(port, "/x") == 502
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(
                "upstream" in e.get("MESSAGE", "") for e in entries):
            try:
                entries.append(journal_fields(js.recv(65536)))
            except socket.timeout:
                pass
    finally:
        proc.stop()
        js.close()
    assert all(e.get("SYSLOG_IDENTIFIER") == "sesame" for e in entries)
    started = [e for e in entries if "started with 2 worker(s)" in e.get("MESSAGE", "")]
    assert started and started[0]["PRIORITY"] == "6"
    assert not started[0]["MESSAGE"].startswith("20")  # no timestamp of our own
    warn = [e for e in entries if "upstream" in e.get("MESSAGE", "")]
    assert warn, entries
    assert warn[0]["PRIORITY"] == "4"
    assert warn[0]["REQUEST_ID"] and warn[0]["MESSAGE"].startswith("request %s: " % warn[0]["REQUEST_ID"])
    assert warn[0]["SESAME_TENANT"] == "t"
    # nothing of it went to stderr
    assert "started with" not in proc.output()


# ---------------------------------------------------------------- doc/alerts.yml

def test_alert_rules_use_real_metrics(stack):
    """Every sesame_* name in doc/alerts.yml is a metric the daemon exposes
    (a renamed metric would silently disable an alert)."""
    import re
    yaml = pytest.importorskip("yaml")
    path = os.path.join(os.path.dirname(__file__), "..", "..", "doc", "alerts.yml")
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert rules and all({"alert", "expr", "labels", "annotations"} <= set(r) for r in rules)
    # family names as the parser gives them (counters without _total), every
    # family declared even before its first sample
    families = {f.name for f in text_string_to_metric_families(
        ops_get(stack.metrics_port, "/metrics").body.decode())}
    for r in rules:
        for name in re.findall(r"\bsesame_[a-z_]+", r["expr"]):
            base = re.sub(r"_(total|bucket|sum|count)$", "", name)
            assert base in families, (r["alert"], name)
    promtool = shutil.which("promtool")
    if promtool:
        out = subprocess.run([promtool, "check", "rules", path], capture_output=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_not_ready_without_provider_metadata(tmp_path):
    """A configured provider whose metadata cannot be fetched keeps the
    instance not ready, and /ready says which."""
    tmp = str(tmp_path)
    port, mport, dead = free_port(), free_port(), free_port()
    secret = os.path.join(tmp, "fc.secret")
    with open(secret, "w") as f:
        f.write("s3cret-for-tests-only\n")
    os.chmod(secret, 0o600)
    extra = "metrics_listen = 127.0.0.1:%d" % mport
    conf = plain_conf(tmp, port, "meta", extra) + """
[provider franceconnect]
issuer = https://127.0.0.1:%d/api/v2
client_id = ville-a-client
client_secret_file = %s
http_timeout = 500ms
""" % (dead, secret)
    gw = Sesame(tmp, conf, name="meta", port=port)
    try:
        wait_port(mport, proc=gw.proc.p)  # it listens right after the workers
        for _ in range(3):
            r = ops_get(mport, "/ready")
            assert r.status == 503 and r.getheader("Retry-After") == "5"
            assert json.loads(r.body) == {"status": "not ready",
                                          "problems": ["provider franceconnect: no metadata loaded"]}
            time.sleep(0.3)
        r = Browser(port).get("http://t.localhost:%d/sesame/ready" % port)
        assert r.status == 503
        # liveness is not readiness
        assert get_status(port) == 200
        assert value(scrape(mport), "sesame_ready") == 0
    finally:
        gw.stop()
