"""TLS per commune: certificates chosen by SNI, reloaded on SIGHUP, HSTS, the
plain-HTTP redirect listener and OCSP stapling. Real `sesame`, a throw-away
CA made with `openssl`, OpenSSL's own client and responder."""

import datetime
import http.client
import json
import http.server
import os
import re
import secrets
import socket
import ssl
import subprocess
import threading
import time

import pytest

from sesame_env import (Echo, Proc, Sesame, check_config, free_port, raw_request, status_of,
                        wait_port)


# ---------------------------------------------------------------------------
# A throw-away CA, its certificates and its OCSP index (openssl CLI only)

def run_openssl(*args, cwd=None):
    out = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (" ".join(args), out.stderr.decode()))
    return out.stdout.decode()


class Pki:
    def __init__(self, d):
        self.dir = d
        os.makedirs(d, exist_ok=True)
        self.ca = os.path.join(d, "ca.pem")
        self.ca_key = os.path.join(d, "ca.key")
        run_openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", self.ca_key, "-out", self.ca, "-days", "3",
                    "-subj", "/CN=Sesame test CA %s" % secrets.token_hex(4),
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self.index = os.path.join(d, "index.txt")
        open(self.index, "w").close()

    def issue(self, name, hosts, ocsp_url=None, index=True):
        """Writes NAME.crt (leaf), NAME.pem (leaf + CA) and NAME.key (0600)."""
        base = os.path.join(self.dir, name)
        key, csr, crt, ext = base + ".key.new", base + ".csr", base + ".crt", base + ".ext"
        run_openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", csr, "-subj", "/CN=%s" % hosts[0])
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=serverAuth\nsubjectAltName=%s\n"
                    % ",".join("DNS:%s" % h for h in hosts))
            if ocsp_url:
                f.write("authorityInfoAccess=OCSP;URI:%s\n" % ocsp_url)
        serial = secrets.token_hex(8).upper()
        run_openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                    "-set_serial", "0x" + serial, "-days", "2", "-extfile", ext, "-out", crt)
        os.chmod(key, 0o600)
        os.replace(key, base + ".key")
        with open(base + ".pem", "w") as f:
            f.write(open(crt).read() + open(self.ca).read())
        if index:
            end = run_openssl("x509", "-in", crt, "-noout", "-enddate").strip().split("=", 1)[1]
            when = datetime.datetime.strptime(end, "%b %d %H:%M:%S %Y GMT")
            with open(self.index, "a") as f:
                f.write("V\t%s\t\t%s\tunknown\t/CN=%s\n" % (when.strftime("%y%m%d%H%M%SZ"), serial,
                                                             hosts[0]))
        return base + ".pem", base + ".key"

    def der(self, name):
        return ssl.PEM_cert_to_DER_cert(open(os.path.join(self.dir, name + ".crt")).read())


# ---------------------------------------------------------------------------
# Clients

def s_client(port, sni=None, status=False, ca=None):
    """OpenSSL's client: (output, subject CN of the served certificate)."""
    argv = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port]
    argv += ["-servername", sni] if sni else ["-noservername"]
    if status:
        argv.append("-status")
    if ca:
        argv += ["-CAfile", ca, "-verify_return_error"]
        if sni:
            argv += ["-verify_hostname", sni]
    out = subprocess.run(argv, input=b"", capture_output=True, timeout=20)
    text = (out.stdout + out.stderr).decode("utf-8", "replace")
    m = re.search(r"^subject=.*CN\s*=\s*([^,\n/]+)", text, re.M)
    return text, (m.group(1).strip() if m else None)


def peer_der(port, sni, cafile=None):
    """The certificate Python's ssl gets with server_hostname=sni (verified when cafile)."""
    if cafile:
        ctx = ssl.create_default_context(cafile=cafile)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as s:
            return s.getpeercert(binary_form=True)


class SNIConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 with the given SNI and verification against cafile."""

    def __init__(self, port, sni, cafile):
        super().__init__("127.0.0.1", port, timeout=10,
                         context=ssl.create_default_context(cafile=cafile))
        self.sni = sni

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.sni)


def https_get(port, host, path, cafile):
    c = SNIConnection(port, host, cafile)
    c.request("GET", path, headers={"Host": host})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r, body


def http_get(port, host, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers={"Host": host})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r, body


def until(predicate, timeout=10.0, step=0.1):
    deadline = time.time() + timeout
    while True:
        v = predicate()
        if v or time.time() > deadline:
            return v
        time.sleep(step)


class StsUpstream:
    """An upstream sending its own Strict-Transport-Security."""

    def __init__(self):
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                body = b"sts upstream\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Strict-Transport-Security", "max-age=5")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------
# The gateway: three communes, two with their own certificate

def gateway_conf(tmp, pki, ports, echo, sts, server_extra=""):
    port, tls_port, redir_port = ports
    return """# TLS test configuration
[server]
listen = 127.0.0.1:{port}
listen = 127.0.0.1:{tls_port} tls
listen = 127.0.0.1:{redir_port} redirect
workers = 2
tls_certificate = {d}/default.pem
tls_certificate_key = {d}/default.key
error_log = {tmp}/sesame-error.log
access_log = {tmp}/sesame-access.log
log_level = debug
{server_extra}

[tenant ville-a]
hosts = a.test www.a.test
public_url = https://a.test:{tls_port}
tls_certificate = {d}/a.pem
tls_certificate_key = {d}/a.key

[tenant ville-b]
hosts = b.test
public_url = https://b.test
tls_certificate = {d}/b.pem
tls_certificate_key = {d}/b.key
hsts = max-age=600; includeSubDomains

[tenant ville-c]
hosts = ville-c.localhost
public_url = http://ville-c.localhost:{port}
hsts = off

[route a]
tenant = ville-a
upstream = {echo}
access = public

[route a-sts]
tenant = ville-a
path = /sts
upstream = {sts}
access = public

[route b]
tenant = ville-b
upstream = {echo}
access = public

[route c]
tenant = ville-c
upstream = {echo}
access = public

[route c-sts]
tenant = ville-c
path = /sts
upstream = {sts}
access = public
""".format(port=port, tls_port=tls_port, redir_port=redir_port, d=pki.dir, tmp=tmp,
           echo=echo.url, sts=sts.url, server_extra=server_extra)


@pytest.fixture
def tmp(tmp_path):
    return str(tmp_path)


@pytest.fixture
def pki(tmp):
    p = Pki(os.path.join(tmp, "pki"))
    p.issue("default", ["default.test"])
    p.issue("a", ["a.test", "www.a.test"])
    p.issue("b", ["b.test"])
    return p


@pytest.fixture
def echo(tmp):
    e = Echo(tmp)
    yield e
    e.stop()


@pytest.fixture
def sts():
    u = StsUpstream()
    yield u
    u.stop()


@pytest.fixture
def gw(tmp, pki, echo, sts):
    ports = (free_port(), free_port(), free_port())
    s = Sesame(tmp, gateway_conf(tmp, pki, ports, echo, sts), port=ports[0])
    wait_port(ports[1], proc=s.proc.p)
    wait_port(ports[2], proc=s.proc.p)
    s.tls_port, s.redir_port = ports[1], ports[2]
    s.pki = pki
    yield s
    s.stop()


def line_of(text, needle):
    for i, l in enumerate(text.splitlines(), 1):
        if l.strip() == needle:
            return i
    raise AssertionError("%r not in the configuration" % needle)


# ---------------------------------------------------------------------------
# Certificates by SNI

def test_each_host_gets_its_own_certificate_openssl(gw):
    ca = gw.pki.ca
    for sni, cn in (("a.test", "a.test"), ("www.a.test", "a.test"), ("b.test", "b.test"),
                    ("A.TEST", "a.test")):
        text, subject = s_client(gw.tls_port, sni, ca=ca if sni.islower() else None)
        assert subject == cn, text[-2000:]
        if sni.islower():
            assert "Verify return code: 0 (ok)" in text, text[-2000:]
    # an SNI no tenant certificate covers, and no SNI at all: the [server] default
    for sni in ("ville-c.localhost", "inconnu.test", None):
        text, subject = s_client(gw.tls_port, sni)
        assert subject == "default.test", text[-2000:]


def test_each_host_gets_its_own_certificate_python(gw):
    pki = gw.pki
    assert peer_der(gw.tls_port, "a.test", pki.ca) == pki.der("a")
    assert peer_der(gw.tls_port, "www.a.test", pki.ca) == pki.der("a")
    assert peer_der(gw.tls_port, "b.test", pki.ca) == pki.der("b")
    assert peer_der(gw.tls_port, "autre.test") == pki.der("default")
    # and the request goes through to the commune's route
    r, body = https_get(gw.tls_port, "b.test", "/demarches", pki.ca)
    assert r.status == 200 and json.loads(body)["path"] == "/demarches"


def test_reload_serves_a_replaced_certificate_and_keeps_it_when_broken(gw):
    pki = gw.pki
    old = pki.der("a")
    pki.issue("a", ["a.test", "www.a.test"])  # new key and certificate, same files
    new = pki.der("a")
    assert new != old
    assert peer_der(gw.tls_port, "a.test", pki.ca) == old  # nothing changes before SIGHUP
    gw.reload()
    assert until(lambda: peer_der(gw.tls_port, "a.test", pki.ca) == new), "new certificate not served"
    assert peer_der(gw.tls_port, "b.test", pki.ca) == pki.der("b")

    # a broken certificate refuses the reload: the running ones keep serving
    with open(os.path.join(pki.dir, "a.pem"), "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    gw.reload()
    assert until(lambda: "reload refused" in gw.errors()), gw.errors()[-2000:]
    conf = open(gw.conf_path).read()
    line = line_of(conf, "tls_certificate = %s/a.pem" % pki.dir)
    expected = "%s:%d: tls_certificate: [tenant ville-a] cannot use the certificate %s/a.pem" % (
        gw.conf_path, line, pki.dir)
    assert expected in gw.errors(), gw.errors()[-2000:]
    assert peer_der(gw.tls_port, "a.test", pki.ca) == new
    assert peer_der(gw.tls_port, "b.test", pki.ca) == pki.der("b")
    r, _ = https_get(gw.tls_port, "a.test", "/", pki.ca)
    assert r.status == 200

    # a key that does not match its certificate too
    pki.issue("spare", ["a.test"], index=False)
    with open(os.path.join(pki.dir, "a.pem"), "w") as f:
        f.write(open(os.path.join(pki.dir, "spare.pem")).read())
    errors_before = gw.errors().count("reload refused")
    gw.reload()
    assert until(lambda: gw.errors().count("reload refused") > errors_before)
    line = line_of(conf, "tls_certificate_key = %s/a.key" % pki.dir)
    assert "%s:%d: tls_certificate_key: [tenant ville-a] the key %s/a.key does not match" % (
        gw.conf_path, line, pki.dir) in gw.errors(), gw.errors()[-2000:]
    assert peer_der(gw.tls_port, "a.test", pki.ca) == new


# ---------------------------------------------------------------------------
# HSTS

def test_hsts_on_every_response_over_tls_only(gw):
    ca = gw.pki.ca
    # Sésame's own pages: health, the 404 page of a tenant host
    r, body = https_get(gw.tls_port, "a.test", "/sesame/health", ca)
    assert r.status == 200 and body == b"ok\n"
    assert r.getheader("Strict-Transport-Security") == "max-age=31536000"
    r, _ = https_get(gw.tls_port, "a.test", "/sesame/nulle-part", ca)
    assert r.status == 404
    assert r.getheader("Strict-Transport-Security") == "max-age=31536000"
    # a proxied response
    r, _ = https_get(gw.tls_port, "a.test", "/demarches", ca)
    assert r.status == 200
    assert r.getheader("Strict-Transport-Security") == "max-age=31536000"
    # an upstream's own header is replaced by Sésame's, not doubled
    r, body = https_get(gw.tls_port, "a.test", "/sts", ca)
    assert body == b"sts upstream\n"
    assert r.headers.get_all("Strict-Transport-Security") == ["max-age=31536000"]
    # the commune's own value
    r, _ = https_get(gw.tls_port, "b.test", "/", ca)
    assert r.getheader("Strict-Transport-Security") == "max-age=600; includeSubDomains"
    # an unknown host over TLS (default certificate): the default value
    r, _ = https_get(gw.tls_port, "default.test", "/", ca)
    assert r.status == 404
    assert r.getheader("Strict-Transport-Security") == "max-age=31536000"

    # hsts = off: none from Sésame, the upstream's passes through
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = http.client.HTTPSConnection("127.0.0.1", gw.tls_port, context=ctx, timeout=10)
    c.request("GET", "/", headers={"Host": "ville-c.localhost"})
    r = c.getresponse()
    r.read()
    assert r.status == 200 and r.getheader("Strict-Transport-Security") is None
    c.request("GET", "/sts", headers={"Host": "ville-c.localhost"})
    r = c.getresponse()
    r.read()
    assert r.headers.get_all("Strict-Transport-Security") == ["max-age=5"]
    c.close()

    # plain HTTP: never, not even the upstream's
    for host, path in (("a.test", "/sesame/health"), ("a.test", "/demarches"), ("a.test", "/sts"),
                       ("ville-c.localhost", "/sts"), ("inconnu.test", "/")):
        r, _ = http_get(gw.port, host, path)
        assert r.getheader("Strict-Transport-Security") is None, (host, path)


# ---------------------------------------------------------------------------
# The redirect listener

def test_redirect_listener(gw, echo):
    before = echo.stats()["requests_total"]
    p = gw.redir_port
    # a tenant host: its https URL, canonical host and path, query as sent
    r, body = http_get(p, "a.test", "/demarches/inscription?annee=2026&x=%C3%A9")
    assert r.status == 301
    assert r.getheader("Location") == "https://a.test:%d/demarches/inscription?annee=2026&x=%%C3%%A9" \
        % gw.tls_port
    assert r.getheader("Strict-Transport-Security") is None
    out, _ = raw_request(p, b"GET /a/./b//c/../d/%7Eme HTTP/1.1\r\nHost: WWW.A.TEST.:80\r\n"
                            b"Connection: close\r\n\r\n")
    assert status_of(out) == 301
    assert b"\r\nLocation: https://www.a.test:%d/a/b/d/~me\r\n" % gw.tls_port in out, out
    # absolute-form: its authority wins, as on the other listeners
    out, _ = raw_request(p, b"GET http://b.test/x HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n")
    assert status_of(out) == 301 and b"\r\nLocation: https://b.test/x\r\n" in out, out
    # other methods keep their method (and body): 308
    out, _ = raw_request(p, b"POST /formulaire?etape=2 HTTP/1.1\r\nHost: b.test\r\nContent-Length: 5\r\n"
                            b"Connection: close\r\n\r\nnom=x")
    assert status_of(out) == 308, out
    assert b"\r\nLocation: https://b.test/formulaire?etape=2\r\n" in out, out
    # a host whose public_url is http: the port of the tls listener
    r, _ = http_get(p, "ville-c.localhost", "/")
    assert r.status == 301
    assert r.getheader("Location") == "https://ville-c.localhost:%d/" % gw.tls_port
    # unknown host: 404; a path that is not canonical: 400
    r, _ = http_get(p, "inconnu.test", "/x")
    assert r.status == 404 and r.getheader("Location") is None
    out, _ = raw_request(p, b"GET /a%2Fb HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
    assert status_of(out) == 400
    # liveness is answered there
    r, body = http_get(p, "a.test", "/sesame/health")
    assert r.status == 200 and body == b"ok\n"
    # and nothing ever reached the upstream
    assert echo.stats()["requests_total"] == before
    log = [e for e in gw.access() if e["path"].startswith("/demarches/inscription")]
    assert log and log[0]["status"] == 301 and log[0]["tenant"] == "ville-a" and log[0]["route"] == ""


# ---------------------------------------------------------------------------
# OCSP stapling

def test_ocsp_stapling(tmp, echo, sts):
    pki = Pki(os.path.join(tmp, "pki"))
    ocsp_port = free_port()
    dead_port = free_port()
    pki.issue("default", ["default.test"])  # no responder
    pki.issue("a", ["a.test", "www.a.test"], ocsp_url="http://127.0.0.1:%d" % ocsp_port)
    pki.issue("b", ["b.test"], ocsp_url="http://127.0.0.1:%d/ocsp" % dead_port)  # nobody answers
    responder = Proc(["openssl", "ocsp", "-index", pki.index, "-port", str(ocsp_port),
                      "-rsigner", pki.ca, "-rkey", pki.ca_key, "-CA", pki.ca, "-nmin", "10",
                      "-ignore_err"], os.path.join(tmp, "ocsp.log"))
    ports = (free_port(), free_port(), free_port())
    s = None
    try:
        # not wait_port: OpenSSL's responder serves one connection at a time,
        # and one closed without a request leaves it stuck
        assert until(lambda: "waiting for OCSP client connections" in responder.output()), \
            responder.output()
        s = Sesame(tmp, gateway_conf(tmp, pki, ports, echo, sts), port=ports[0])
        wait_port(ports[1], proc=s.proc.p)
        tls_port = ports[1]

        def stapled():
            text, subject = s_client(tls_port, "a.test", status=True, ca=pki.ca)
            return text if "OCSP Response Status: successful" in text else None
        text = until(stapled, timeout=20, step=0.3)
        assert text, s_client(tls_port, "a.test", status=True)[0][-3000:] + s.errors()[-2000:]
        assert "Cert Status: good" in text
        assert "Verify return code: 0 (ok)" in text
        assert "OCSP: stapling the response for /CN=a.test" in s.errors()

        # no responder in the certificate: no staple, and the handshake is fine
        text, subject = s_client(tls_port, None, status=True)
        assert subject == "default.test"
        assert "OCSP response: no response sent" in text, text[-2000:]
        assert "OCSP" not in "\n".join(l for l in s.errors().splitlines() if "default.test" in l)
        # a responder that does not answer: no staple either, the handshake is fine
        text, subject = s_client(tls_port, "b.test", status=True, ca=pki.ca)
        assert subject == "b.test" and "Verify return code: 0 (ok)" in text, text[-2000:]
        assert "OCSP response: no response sent" in text, text[-2000:]
        assert until(lambda: "OCSP: cannot fetch the response for /CN=b.test" in s.errors())
        # a client that does not ask gets none
        text, subject = s_client(tls_port, "a.test", status=False, ca=pki.ca)
        assert subject == "a.test" and "OCSP response" not in text

        # ocsp_stapling = off: nothing stapled, nothing fetched
        s.write_conf(gateway_conf(tmp, pki, ports, echo, sts, server_extra="ocsp_stapling = off"))
        s.reload()
        assert until(lambda: "configuration reloaded" in s.errors())

        def unstapled():
            text, _ = s_client(tls_port, "a.test", status=True, ca=pki.ca)
            return "OCSP response: no response sent" in text
        assert until(unstapled, timeout=10)
    finally:
        if s:
            s.stop()
        responder.stop()


# ---------------------------------------------------------------------------
# sesame -t

CHECK = """[server]
listen = 127.0.0.1:8443 tls
listen = 127.0.0.1:8080 redirect
tls_certificate = {d}/default.pem
tls_certificate_key = {d}/default.key

[tenant ville-a]
hosts = a.test www.a.test
public_url = https://a.test
tls_certificate = {d}/a.pem
tls_certificate_key = {d}/a.key

[route accueil]
tenant = ville-a
upstream = http://127.0.0.1:9000
access = public
"""


def check(tmp_path, text):
    path = tmp_path / "sesame.conf"
    path.write_text(text)
    rc, out = check_config(str(path))
    return str(path), rc, out


def test_check_good_tls_configuration(tmp_path, pki):
    path, rc, out = check(tmp_path, CHECK.format(d=pki.dir))
    assert rc == 0, out
    path, rc, out = check(tmp_path, CHECK.format(d=pki.dir).replace(
        "tls_certificate_key = %s/a.key\n" % pki.dir,
        "tls_certificate_key = %s/a.key\nhsts = max-age=63072000; includeSubDomains; preload\n" % pki.dir))
    assert rc == 0, out


def tls_cases(d):
    good = CHECK.format(d=d)
    key_a = "tls_certificate_key = %s/a.key\n" % d
    return [
        ("certificate without key", good.replace(key_a, ""), 10, "tls_certificate_key",
         "both are needed"),
        ("certificate for other hosts", good.replace("%s/a.pem" % d, "%s/b.pem" % d).replace(
            "%s/a.key" % d, "%s/b.key" % d), 10, "tls_certificate",
         "[tenant ville-a] the certificate %s/b.pem is not valid for the host a.test" % d),
        ("key of another certificate", good.replace("%s/a.key" % d, "%s/b.key" % d), 11,
         "tls_certificate_key", "does not match the certificate %s/a.pem" % d),
        ("not a certificate", good.replace("%s/a.pem" % d, "%s/a.key" % d), 10, "tls_certificate",
         "[tenant ville-a] cannot use the certificate %s/a.key" % d),
        ("default not a certificate", good.replace("%s/default.pem" % d, "%s/default.key" % d), 4,
         "tls_certificate", "cannot use the certificate %s/default.key" % d),
        ("unreadable certificate", good.replace("%s/a.pem" % d, "%s/absent.pem" % d), 10,
         "tls_certificate", "cannot read"),
        ("bad hsts", good.replace(key_a, key_a + "hsts = 1 an\n"), 12, "hsts", "max-age=SECONDS"),
        ("hsts unknown directive", good.replace(key_a, key_a + "hsts = max-age=60; always\n"), 12,
         "hsts", "max-age=SECONDS"),
        ("hsts preload too weak", good.replace(key_a, key_a + "hsts = max-age=600; preload\n"), 12,
         "hsts", "preload needs includeSubDomains"),
        ("bad listen flag", good.replace("8080 redirect", "8080 plain"), 3, "listen",
         "tls or redirect"),
    ]


def test_check_tls_errors(tmp_path, pki):
    for name, text, line, key, words in tls_cases(pki.dir):
        path, rc, out = check(tmp_path, text)
        assert rc == 1, (name, out)
        wanted = "%s:%d: %s: " % (path, line, key)
        assert any(l.startswith(wanted) and words in l for l in out.splitlines()), (name, out)


def test_check_refuses_a_key_readable_by_others(tmp_path, pki):
    os.chmod(os.path.join(pki.dir, "a.key"), 0o644)
    path, rc, out = check(tmp_path, CHECK.format(d=pki.dir))
    assert rc == 1
    assert "%s:11: tls_certificate_key: %s/a.key is readable by other users" % (path, pki.dir) in out, out
