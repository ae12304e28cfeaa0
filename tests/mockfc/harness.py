"""Process helpers for Sésame's integration tests: the mock FranceConnect, the echo upstream, and
any other process (the gateway, redis-server) started for a test and always stopped after it.

Import from a test file:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "mockfc"))
    import harness

Processes:
- free_port(host="127.0.0.1") -> int: a port free at the time of the call (the OS may hand it out
  again before it is bound: prefer port 0 with a ready file where the program supports it, as the
  mock and the echo upstream do).
- ManagedProcess(argv, workdir, name, ready_file=None, env=None, cwd=None): starts argv at once;
  stdout and stderr go to WORKDIR/NAME.stdout / .stderr. wait_ready(timeout=30) waits for the ready
  file and returns its text (raises HarnessError with the stderr tail if the process exits or the
  timeout passes). wait_port(host, port, timeout=30) waits until a TCP connect succeeds. stop()
  sends SIGTERM, then SIGKILL after 5 s; idempotent; also done at interpreter exit. stderr_text()
  returns what the process wrote on stderr. Usable as a context manager (stops on exit).
- start_mockfc(workdir, clients, mode="fc", host="127.0.0.1", port=0, issuer_path="/api/v2",
  pki_dir=None, identities=None, autologin=None, extra_args=(), timeout=30) -> MockFC.
  clients: list of client dicts (written to WORKDIR/mockfc-clients.json; see mockfc.py for the
  fields). pki_dir defaults to WORKDIR/pki. The mock serves once this returns. mode: "fc"
  (FranceConnect, eidas1 only), "fc-stepup" (FranceConnect that also grants eidas2 when
  acr_values asks for it, as FranceConnect+ would: the highest level asked among eidas1 eidas2)
  or "fcplus" (FranceConnect+, eidas2 / eidas3, encrypted tokens); MODES lists them.
- start_echo_upstream(workdir, host="127.0.0.1", port=0, timeout=30) -> EchoUpstream.

MockFC (a ManagedProcess): port, host, issuer, base_url ("https://host:port"), ca_file, pki_dir,
config_path, mode, clients. ssl_context() verifies against ca_file. request(method, path_or_url,
body=None, headers=None, timeout=10) -> Reply. Controls: scenario(name, **params), autologin(login
or None), log(since=0) -> list, reset(), clock(advance=None, offset=None) -> offset. discovery(),
jwks(). authorize_url(client_id, redirect_uri, state=None, nonce=None, scope="openid ...",
acr_values="eidas1", **extra) -> (url, state, nonce).

EchoUpstream (a ManagedProcess): port, host, url ("http://host:port"). stats() -> dict, log() ->
list, request(method, path, body=None, headers=None) -> Reply.

Helpers:
- http_request(url, method="GET", body=None, headers=None, ssl_context=None, timeout=10) -> Reply:
  one request on a new connection; redirects are not followed.
- Reply: status, reason, headers (list of (name, value)), body (bytes); header(name) (first value,
  case-insensitive, or None), header_all(name), text(), json(), location_params() -> list of
  (name, value) of the Location query.
- identity_link(page_html, login) -> the href of that identity on the mock's identity page (HTML
  entities decoded); cancel_link(page_html) -> the "Annuler" href.
- expected_sub(client_id, login) -> the sub the mock gives (sha256 hex of client_id + login, "v1").
- big_pattern(size) -> bytes and big_pattern_sha256(size) -> hex: the echo upstream's /__big body
  (byte at offset i is i % 251).
- load_identities(path=IDENTITIES_CSV) -> list of dicts, in file order (columns of the CSV).
- new_client_key(kty="EC"|"RSA", kid=None, use="enc", alg=None) -> (private_key, private_jwk,
  public_jwk), to give a client encryption or assertion keys.
- random_token(n=32) -> URL-safe random text (for state / nonce).
"""

import atexit
import hashlib
import html
import http.client
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse

MOCKFC_DIR = os.path.dirname(os.path.abspath(__file__))
if MOCKFC_DIR not in sys.path:
    sys.path.insert(0, MOCKFC_DIR)

import minijose  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(MOCKFC_DIR))
MOCKFC_SCRIPT = os.path.join(MOCKFC_DIR, "mockfc.py")
ECHO_SCRIPT = os.path.join(REPO_ROOT, "tests", "integration", "echo_upstream.py")
IDENTITIES_CSV = os.path.join(MOCKFC_DIR, "fc-test-identities.csv")
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable

MODES = ("fc", "fc-stepup", "fcplus")  # mockfc.py --mode

DEFAULT_SCOPE = ("openid given_name family_name preferred_username birthdate gender "
                 "birthplace birthcountry email")


class HarnessError(Exception):
    pass


_LIVE = set()  # started and not yet stopped


@atexit.register
def _stop_all():
    for proc in list(_LIVE):
        proc.stop()


def free_port(host="127.0.0.1"):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def random_token(n=32):
    return secrets.token_urlsafe(n)


# ---------------------------------------------------------------- HTTP

class Reply:
    def __init__(self, status, reason, headers, body):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body

    def header(self, name):
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def text(self):
        return self.body.decode("utf-8")

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def location_params(self):
        loc = self.header("Location")
        if loc is None:
            raise HarnessError("no Location header (status %d)" % self.status)
        return urllib.parse.parse_qsl(urllib.parse.urlsplit(loc).query, keep_blank_values=True)

    def __repr__(self):
        return "<Reply %d %s, %d bytes>" % (self.status, self.reason, len(self.body))


def http_request(url, method="GET", body=None, headers=None, ssl_context=None, timeout=10):
    split = urllib.parse.urlsplit(url)
    host = split.hostname
    port = split.port or (443 if split.scheme == "https" else 80)
    if split.scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl_context)
    elif split.scheme == "http":
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    else:
        raise HarnessError("unsupported URL scheme in %r" % url)
    target = split.path or "/"
    if split.query:
        target += "?" + split.query
    if isinstance(body, str):
        body = body.encode("utf-8")
    try:
        conn.request(method, target, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, resp.reason, resp.getheaders(), data)
    finally:
        conn.close()


def identity_link(page_html, login):
    m = re.search(r'<a class="identity" id="login-%s"[^>]*href="([^"]+)"' % re.escape(login),
                  page_html)
    if not m:
        raise HarnessError("identity %r not on the page" % login)
    return html.unescape(m.group(1))


def cancel_link(page_html):
    m = re.search(r'<a id="cancel" href="([^"]+)"', page_html)
    if not m:
        raise HarnessError("no cancel link on the page")
    return html.unescape(m.group(1))


# ---------------------------------------------------------------- test data

def expected_sub(client_id, login):
    return hashlib.sha256((client_id + login).encode("utf-8")).hexdigest() + "v1"


_BLOCK = bytes(range(251)) * 256


def big_pattern(size):
    reps = size // len(_BLOCK) + 1
    return (_BLOCK * reps)[:size]


def big_pattern_sha256(size):
    digest = hashlib.sha256()
    left = size
    while left > 0:
        block = _BLOCK if left >= len(_BLOCK) else _BLOCK[:left]
        digest.update(block)
        left -= len(block)
    return digest.hexdigest()


def load_identities(path=IDENTITIES_CSV):
    import csv
    columns = ("login", "given_name", "family_name", "preferred_username", "gender", "birthdate",
               "idp_birthdate", "birthplace", "birthcountry", "email", "case")
    with open(path, encoding="utf-8", newline="") as f:
        lines = [line for line in f if line.strip() and not line.startswith("#")]
    out = []
    for row in csv.reader(lines):
        row = row[:len(columns) - 1] + [",".join(row[len(columns) - 1:])]
        out.append(dict(zip(columns, row)))
    return out


def new_client_key(kty="EC", kid=None, use="enc", alg=None):
    key = minijose.generate_key(kty)
    kid = kid or "%s-%s" % (kty.lower(), secrets.token_hex(4))
    return (key, minijose.private_jwk(key, kid=kid, alg=alg, use=use),
            minijose.public_jwk(key, kid=kid, alg=alg, use=use))


# ---------------------------------------------------------------- processes

class ManagedProcess:
    def __init__(self, argv, workdir, name, ready_file=None, env=None, cwd=None):
        os.makedirs(workdir, exist_ok=True)
        self.argv = list(argv)
        self.name = name
        self.ready_file = ready_file
        self.stdout_path = os.path.join(workdir, name + ".stdout")
        self.stderr_path = os.path.join(workdir, name + ".stderr")
        if ready_file and os.path.exists(ready_file):
            os.unlink(ready_file)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, env=env, cwd=cwd, start_new_session=True)
        self.pid = self.proc.pid
        _LIVE.add(self)

    def alive(self):
        return self.proc.poll() is None

    def stderr_text(self):
        try:
            with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def _fail(self, why):
        tail = self.stderr_text()[-3000:]
        self.stop()
        raise HarnessError("%s: %s (exit %s)\n--- stderr tail ---\n%s"
                           % (self.name, why, self.proc.returncode, tail))

    def wait_ready(self, timeout=30):
        if not self.ready_file:
            raise HarnessError("%s has no ready file" % self.name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(self.ready_file):
                with open(self.ready_file, encoding="utf-8") as f:
                    text = f.read()
                if text.endswith("\n"):
                    return text.strip()
            if not self.alive():
                self._fail("exited before becoming ready")
            time.sleep(0.05)
        self._fail("not ready after %s s" % timeout)

    def wait_port(self, host, port, timeout=30):
        deadline = time.monotonic() + timeout
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        while time.monotonic() < deadline:
            if not self.alive():
                self._fail("exited before listening")
            try:
                with socket.socket(family, socket.SOCK_STREAM) as s:
                    s.settimeout(1)
                    s.connect((host, port))
                    return
            except OSError:
                time.sleep(0.05)
        self._fail("not listening on %s:%d after %s s" % (host, port, timeout))

    def stop(self, timeout=5):
        proc = getattr(self, "proc", None)
        if proc is None:
            return
        if proc.poll() is not None:
            _LIVE.discard(self)
            return
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        except ProcessLookupError:
            pass
        finally:
            _LIVE.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class MockFC(ManagedProcess):
    def __init__(self, workdir, clients, mode="fc", host="127.0.0.1", port=0,
                 issuer_path="/api/v2", pki_dir=None, identities=None, autologin=None,
                 extra_args=(), timeout=30):
        if mode not in MODES:
            raise HarnessError("unknown mock mode %r (known: %s)" % (mode, ", ".join(MODES)))
        self.host, self.mode, self.clients = host, mode, list(clients)
        self.pki_dir = pki_dir or os.path.join(workdir, "pki")
        self.ca_file = os.path.join(self.pki_dir, "ca.pem")
        os.makedirs(workdir, exist_ok=True)
        self.config_path = os.path.join(workdir, "mockfc-clients.json")
        with open(self.config_path, "w", encoding="utf-8") as f:
            json.dump(self.clients, f, indent=1)
        argv = [PYTHON, MOCKFC_SCRIPT, "--port", str(port), "--host", host,
                "--pki-dir", self.pki_dir, "--config", self.config_path, "--mode", mode,
                "--issuer-path", issuer_path,
                "--ready-file", os.path.join(workdir, "mockfc.ready")]
        if identities:
            argv += ["--identities", identities]
        if autologin:
            argv += ["--autologin", autologin]
        argv += list(extra_args)
        super().__init__(argv, workdir, "mockfc", os.path.join(workdir, "mockfc.ready"))
        line = self.wait_ready(timeout)
        self.port = int(line.split()[1])
        url_host = "[%s]" % host if ":" in host else host
        self.base_url = "https://%s:%d" % (url_host, self.port)
        path = "/" + issuer_path.strip("/") if issuer_path.strip("/") else ""
        self.issuer = self.base_url + path
        self._ctx = None

    def ssl_context(self):
        if self._ctx is None:
            self._ctx = ssl.create_default_context(cafile=self.ca_file)
        return self._ctx

    def request(self, method, path_or_url, body=None, headers=None, timeout=10):
        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url
        return http_request(url, method, body, headers, self.ssl_context(), timeout)

    def _control(self, method, name, payload=None):
        body = json.dumps(payload).encode("utf-8") if payload is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        reply = self.request(method, "/__mock/" + name, body, headers)
        if reply.status != 200:
            raise HarnessError("control %s: %d %s" % (name, reply.status, reply.text()))
        return reply.json()

    def scenario(self, name, **params):
        return self._control("POST", "scenario", dict(params, name=name))

    def autologin(self, login):
        return self._control("POST", "autologin", {"login": login})

    def backchannel(self, **params):
        """A back-channel logout token (mockfc.py backchannel), sent to `uri`."""
        return self._control("POST", "backchannel", params)

    def log(self, since=0):
        return self._control("GET", "log?since=%d" % since)

    def reset(self):
        return self._control("POST", "reset", {})

    def clock(self, advance=None, offset=None):
        if advance is None and offset is None:
            return self._control("GET", "clock")["offset"]
        payload = {"advance": advance} if advance is not None else {"offset": offset}
        return self._control("POST", "clock", payload)["offset"]

    def discovery(self):
        return self.request("GET", self.issuer + "/.well-known/openid-configuration").json()

    def jwks(self):
        return self.request("GET", self.issuer + "/jwks").json()

    def authorize_url(self, client_id, redirect_uri, state=None, nonce=None,
                      scope=DEFAULT_SCOPE, acr_values="eidas1", **extra):
        state = state or random_token()
        nonce = nonce or random_token()
        params = [("response_type", "code"), ("client_id", client_id),
                  ("redirect_uri", redirect_uri), ("scope", scope), ("state", state),
                  ("nonce", nonce)]
        if acr_values is not None:
            params.append(("acr_values", acr_values))
        params += list(extra.items())
        return (self.issuer + "/authorize?" + urllib.parse.urlencode(params), state, nonce)


def start_mockfc(workdir, clients, **kwargs):
    return MockFC(workdir, clients, **kwargs)


class EchoUpstream(ManagedProcess):
    def __init__(self, workdir, host="127.0.0.1", port=0, timeout=30):
        ready = os.path.join(workdir, "echo.ready")
        super().__init__([PYTHON, ECHO_SCRIPT, "--port", str(port), "--host", host,
                          "--ready-file", ready], workdir, "echo", ready)
        line = self.wait_ready(timeout)
        self.host = host
        self.port = int(line.split()[1])
        self.url = "http://%s:%d" % ("[%s]" % host if ":" in host else host, self.port)

    def request(self, method, path, body=None, headers=None, timeout=10):
        return http_request(self.url + path, method, body, headers, None, timeout)

    def stats(self):
        return self.request("GET", "/__stats").json()

    def log(self):
        return self.request("GET", "/__log").json()


def start_echo_upstream(workdir, **kwargs):
    return EchoUpstream(workdir, **kwargs)
