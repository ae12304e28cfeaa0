"""The `http` account plugin against hmac_server.py, a stand-in for the
commune's citizen-relations software: signature, answers, retry, timeout,
server down, TLS verification.

The plugin is loaded by tests/unit/plugins/plugin_driver (built by
`make check`), exactly as the daemon loads it (dlopen, ABI check, init, the
worker pool), from SESAME_PLUGIN_DIR (default: <builddir>/.libs).
"""

import datetime
import ipaddress
import json
import os
import secrets
import socket
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("SESAME_SRCDIR", os.path.abspath(os.path.join(HERE, "..", "..")))
BUILDDIR = os.environ.get("SESAME_BUILDDIR", SRCDIR)
PLUGIN_DIR = os.environ.get("SESAME_PLUGIN_DIR", os.path.join(BUILDDIR, ".libs"))
DRIVER = os.path.join(BUILDDIR, "tests", "unit", "plugins", "plugin_driver")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

JEAN = {
    "given_name": "Jean-Baptiste",
    "family_name": "D'ALMEIDA-LÉVÊQUE",
    "birthdate": "1979-03-02",
    "birthplace": "33063",
    "birthcountry": "99100",
}

def make_pki(directory):
    """A private CA and a server certificate for 127.0.0.1 signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sesame test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                         critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    paths = {}
    for name, data in (("ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
                       ("server.pem", cert.public_bytes(serialization.Encoding.PEM)),
                       ("server.key", key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))):
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(data)
        paths[name] = path
    return paths


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    paths = make_pki(str(d))
    secret = os.path.join(str(d), "secret")
    with open(secret, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    other = os.path.join(str(d), "other-secret")
    with open(other, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    short = os.path.join(str(d), "short-secret")
    with open(short, "w") as f:
        f.write("tooshort\n")
    paths.update(secret=secret, other_secret=other, short_secret=short)
    return paths


class Server:
    def __init__(self, pki, mode, tmp_path, delay=None):
        self.log = str(tmp_path / ("hmac-%s.log" % mode))
        argv = [PYTHON, os.path.join(HERE, "hmac_server.py"), "--port", "0",
                "--secret-file", pki["secret"], "--cert", pki["server.pem"],
                "--key", pki["server.key"], "--mode", mode, "--log", self.log]
        if delay is not None:
            argv += ["--delay", str(delay)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError("hmac_server did not start: %r %s" % (line, self.proc.stderr.read()))
        self.port = int(line.split()[1])
        self.url = "https://127.0.0.1:%d/sesame/resolve" % self.port

    def entries(self):
        if not os.path.exists(self.log):
            return []
        with open(self.log, encoding="utf-8") as f:
            return [json.loads(l) for l in f if l.strip()]

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def server(pki, tmp_path):
    started = []

    def start(mode="ok", delay=None):
        s = Server(pki, mode, tmp_path, delay)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def resolve(url, pki, sub="c3d4v1", claims=JEAN, secret=None, ca=True, timeout=None,
            extra=()):
    argv = [DRIVER, "http", "-o", "url=" + url,
            "-o", "secret_file=" + (secret or pki["secret"])]
    if ca:
        argv += ["-o", "ca_file=" + pki["ca.pem"]]
    if timeout:
        argv += ["-o", "timeout=" + timeout]
    argv += list(extra)
    argv += ["-t", "ville-a", "-p", "fc", "-s", sub]
    for k, v in claims.items():
        argv += ["-c", "%s=%s" % (k, v)]
    env = dict(os.environ, SESAME_PLUGIN_DIR=PLUGIN_DIR)
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    if p.returncode != 0:
        return p.returncode, p.stderr
    return 0, json.loads(p.stdout)


def test_signed_request_found(server, pki):
    s = server("ok")
    rc, out = resolve(s.url, pki)
    assert rc == 0, out
    assert out == {"status": "found", "account_id": "crm-c3d4v1",
                   "attributes": {"quartier": "Centre", "tenant_seen": "ville-a",
                                  "family_name_seen": "D'ALMEIDA-LÉVÊQUE"}}
    entries = s.entries()
    assert len(entries) == 1
    assert entries[0]["verified"] is True
    assert entries[0]["content_type"] == "application/json"
    assert entries[0]["body"] == {"tenant": "ville-a", "provider": "fc", "sub": "c3d4v1",
                                  "claims": JEAN}


def test_wrong_secret_refused_by_server(server, pki):
    s = server("ok")
    rc, out = resolve(s.url, pki, secret=pki["other_secret"])
    assert rc == 0, out
    assert out == {"status": "error", "error": "account service answered HTTP 401"}
    entries = s.entries()
    assert [e["verified"] for e in entries] == [False]  # 4xx: no retry


def test_no_account_answers(server, pki):
    s = server("ok")
    assert resolve(s.url, pki, sub="deny-1")[1] == {"status": "none", "reason": "deny"}
    assert resolve(s.url, pki, sub="link-1")[1] == {"status": "none", "reason": "link_only"}


@pytest.mark.parametrize("sub,error", [
    ("garbage-1", "account service: invalid answer"),
    ("both-1", "account service: invalid answer"),
    ("notjson-1", "account service: answer is not a JSON object"),
])
def test_invalid_answers(server, pki, sub, error):
    s = server("ok")
    assert resolve(s.url, pki, sub=sub)[1] == {"status": "error", "error": error}


def test_retry_once_after_500(server, pki):
    s = server("500once")
    rc, out = resolve(s.url, pki)
    assert out["status"] == "found", out
    assert out["account_id"] == "crm-c3d4v1"
    entries = s.entries()
    assert [(e["verified"], e["status"]) for e in entries] == [(True, 500), (True, 200)]


def test_500_twice_is_an_error(server, pki):
    s = server("500")
    rc, out = resolve(s.url, pki)
    assert out == {"status": "error", "error": "account service answered HTTP 500"}
    assert len(s.entries()) == 2


def test_400_not_retried(server, pki):
    s = server("400")
    rc, out = resolve(s.url, pki)
    assert out == {"status": "error", "error": "account service answered HTTP 400"}
    assert len(s.entries()) == 1


def test_timeout_not_retried(server, pki):
    s = server("slow", delay=10)
    rc, out = resolve(s.url, pki, timeout="300ms")
    assert out == {"status": "error", "error": "account service: no answer within 300 ms"}
    assert len(s.entries()) == 1


def test_server_closing_connections_retried_then_error(server, pki):
    s = server("down")
    rc, out = resolve(s.url, pki)
    assert out["status"] == "error"
    assert out["error"].startswith("account service unreachable: "), out
    assert len(s.entries()) == 2


def test_nothing_listening(pki):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rc, out = resolve("https://127.0.0.1:%d/x" % port, pki)
    assert out == {"status": "error",
                   "error": "account service unreachable: Couldn't connect to server"}


def test_tls_always_verified(server, pki):
    s = server("ok")
    # without the private CA, the system trust store refuses the certificate
    rc, out = resolve(s.url, pki, ca=False)
    assert out["status"] == "error"
    assert "certificate" in out["error"].lower() or "SSL" in out["error"], out
    assert s.entries() == []
    # a certificate for another name is refused too
    rc, out = resolve(s.url.replace("127.0.0.1", "localhost"), pki)
    assert out["status"] == "error", out
    assert s.entries() == []


@pytest.mark.parametrize("opts,message", [
    (["-o", "url=http://127.0.0.1:1/x", "-o", "secret_file=SECRET"],
     'plugin "http": line 2: url: must be an https:// URL (at most 2048 bytes)'),
    (["-o", "url=https://127.0.0.1:1/x"], 'plugin "http": secret_file: missing'),
    (["-o", "url=https://127.0.0.1:1/x", "-o", "secret_file=SHORT"],
     'plugin "http": line 3: secret_file: SHORT: the secret must be 32 to 1024 bytes'),
    (["-o", "url=https://127.0.0.1:1/x", "-o", "secret_file=SECRET", "-o", "retries=3"],
     'plugin "http": line 4: retries: unknown option of the http plugin'),
    (["-o", "url=https://127.0.0.1:1/x", "-o", "secret_file=SECRET", "-o", "timeout=2 min"],
     'plugin "http": line 4: timeout: a duration from 1ms to 60s'),
])
def test_option_errors(pki, opts, message):
    opts = [o.replace("SECRET", pki["secret"]).replace("SHORT", pki["short_secret"])
            for o in opts]
    env = dict(os.environ, SESAME_PLUGIN_DIR=PLUGIN_DIR)
    p = subprocess.run([DRIVER, "http"] + opts + ["-t", "ville-a", "-p", "fc", "-s", "x"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2
    message = message.replace("SHORT", pki["short_secret"])
    assert p.stderr.strip().startswith("driver.conf:1: accounts driver: " + message), p.stderr
