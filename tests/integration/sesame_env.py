"""Process harness for Sésame's integration tests.

Starts real processes on free loopback ports and stops them at teardown:
the `sesame` binary from the build tree, the echo upstream
(echo_upstream.py), redis-server and the mock FranceConnect.

Environment: SESAME_BUILDDIR (where the `sesame` binary is; default: the
source tree), SESAME_SRCDIR (the source tree; default: two levels up).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import http.client

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("SESAME_SRCDIR", os.path.abspath(os.path.join(HERE, "..", "..")))
BUILDDIR = os.environ.get("SESAME_BUILDDIR", SRCDIR)
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def sesame_binary():
    path = os.path.join(BUILDDIR, "sesame")
    if not os.path.exists(path):
        raise RuntimeError("sesame binary not found at %s (build first)" % path)
    return path


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("nothing listening on port %d after %.1fs" % (port, timeout))


class Proc:
    """A child process whose output goes to a log file; killed on stop()."""

    def __init__(self, argv, logpath, env=None):
        self.argv = argv
        self.logpath = logpath
        self.log = open(logpath, "wb")
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)

    @property
    def pid(self):
        return self.p.pid

    def signal(self, sig):
        self.p.send_signal(sig)

    def alive(self):
        return self.p.poll() is None

    def wait(self, timeout=10):
        return self.p.wait(timeout=timeout)

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()
        # In the sanitizer build, a report from any process fails the test
        # that ran it: the pass must be clean, not just green.
        report = sanitizer_report(self.output())
        if report:
            raise AssertionError("%s: sanitizer report:\n%s" % (self.argv[0], report))


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: ThreadSanitizer")


def sanitizer_report(text):
    """The first sanitizer report in a process's output, or ""."""
    for marker in SANITIZER_MARKERS:
        i = text.find(marker)
        if i >= 0:
            return text[max(0, i - 200):i + 3000]
    return ""


class Echo:
    """The echo upstream (tests/integration/echo_upstream.py)."""

    def __init__(self, tmpdir, tls=None):
        """tls: (certificate, key) PEM paths to serve HTTPS."""
        self.port = free_port()
        self.tls = tls
        argv = [PYTHON, os.path.join(HERE, "echo_upstream.py"), "--port", str(self.port)]
        if tls:
            argv += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        self.proc = Proc(argv, os.path.join(tmpdir, "echo-%d.log" % self.port))
        wait_port(self.port, proc=self.proc.p)

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % ("https" if self.tls else "http", self.port)

    def stats(self):
        if self.tls:
            import ssl
            ctx = ssl._create_unverified_context()  # the test's own server, read locally
            c = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=5, context=ctx)
        else:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        c.request("GET", "/__stats")
        r = c.getresponse()
        data = json.loads(r.read())
        c.close()
        return data

    def stop(self):
        self.proc.stop()


class Redis:
    def __init__(self, tmpdir, port=None):
        self.port = port or free_port()
        self.dir = os.path.join(tmpdir, "redis-%d" % self.port)
        os.makedirs(self.dir, exist_ok=True)
        self.start()

    def start(self):
        self.proc = Proc(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "no", "--dir", self.dir],
                         os.path.join(self.dir, "redis.log"))
        wait_port(self.port, proc=self.proc.p)

    def cli(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.port), "--raw"] + list(args),
                             capture_output=True, check=True)
        return out.stdout.decode("utf-8", "replace")

    def stop(self):
        self.proc.stop()


class Sesame:
    """The real daemon, with a configuration written from text."""

    def __init__(self, tmpdir, conf_text, name="sesame", port=None, wait=True):
        self.tmpdir = tmpdir
        self.port = port
        self.conf_path = os.path.join(tmpdir, "%s.conf" % name)
        self.access_log = os.path.join(tmpdir, "%s-access.log" % name)
        self.error_log = os.path.join(tmpdir, "%s-error.log" % name)
        self.write_conf(conf_text)
        env = dict(os.environ)
        # Under AddressSanitizer, freed memory sits in a quarantine (256 MiB by
        # default) that would hide whether memory stays bounded; keep it small.
        env["ASAN_OPTIONS"] = "quarantine_size_mb=4:" + env.get("ASAN_OPTIONS", "")
        self.proc = Proc([sesame_binary(), "-c", self.conf_path], os.path.join(tmpdir, "%s.out" % name),
                         env=env)
        if wait and port:
            wait_port(port, proc=self.proc.p)

    def write_conf(self, text):
        with open(self.conf_path, "w") as f:
            f.write(text)

    def reload(self):
        self.proc.signal(signal.SIGHUP)

    def errors(self):
        try:
            with open(self.error_log, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def access(self):
        try:
            with open(self.access_log, encoding="utf-8") as f:
                return [json.loads(l) for l in f if l.strip()]
        except FileNotFoundError:
            return []

    def rss_kib(self, field="VmHWM"):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.stop()


def check_config(path):
    """Runs `sesame -t -c path`; returns (exit code, stdout + stderr)."""
    out = subprocess.run([sesame_binary(), "-t", "-c", path], capture_output=True, timeout=30)
    text = (out.stdout + out.stderr).decode("utf-8", "replace")
    report = sanitizer_report(text)
    if report:
        raise AssertionError("sesame -t: sanitizer report:\n" + report)
    return out.returncode, text


def raw_request(port, data, timeout=5.0, read_all=True):
    """Sends raw bytes and returns everything received until the peer closes
    (or the timeout). Returns (bytes, closed_by_peer)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    chunks = []
    closed = False
    try:
        while True:
            b = s.recv(65536)
            if not b:
                closed = True
                break
            chunks.append(b)
            if not read_all:
                break
    except socket.timeout:
        pass
    except ConnectionResetError:
        closed = True
    finally:
        s.close()
    return b"".join(chunks), closed


def status_of(raw):
    line = raw.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
