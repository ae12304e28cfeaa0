"""Gateway core: routing, proxying, keep-alive, streaming, strict parsing,
timeouts, error pages, reload and drain. Real `sesame`, real upstream."""

import hashlib
import os
import http.client
import json
import os
import signal
import socket
import threading
import time

import pytest

from sesame_env import (Echo, Sesame, check_config, free_port, raw_request, status_of,
                        wait_port)


def base_conf(tmp, port, routes, extra_server="", tenants=None):
    tenants = tenants or """
[tenant ville-a]
display_name = Ville d'Arbre
hosts = ville-a.localhost www.ville-a.localhost
public_url = http://ville-a.localhost:%d

[tenant ville-b]
display_name = Ville de Bois
hosts = ville-b.localhost
public_url = http://ville-b.localhost:%d
""" % (port, port)
    return """# test configuration
[server]
listen = 127.0.0.1:%d
workers = 2
header_timeout = 1s
idle_timeout = 5s
upstream_connect_timeout = 1s
upstream_read_timeout = 1s
shutdown_timeout = 5s
max_body_size = 1m
error_log = %s/sesame-error.log
access_log = %s/sesame-access.log
log_level = debug
%s
%s
%s
""" % (port, tmp, tmp, extra_server, tenants, routes)


@pytest.fixture
def tmp(tmp_path):
    return str(tmp_path)


@pytest.fixture
def echo(tmp):
    e = Echo(tmp)
    yield e
    e.stop()


@pytest.fixture
def echo2(tmp):
    e = Echo(tmp)
    yield e
    e.stop()


def two_routes(echo, echo2):
    return """
[route a-home]
tenant = ville-a
path = /
upstream = %s
access = public

[route a-cantine]
tenant = ville-a
path = /cantine
upstream = %s
access = public
preserve_host = off

[route b-home]
tenant = ville-b
path = /
upstream = %s
access = public
""" % (echo.url, echo2.url, echo2.url)


@pytest.fixture
def gw(tmp, echo, echo2):
    port = free_port()
    s = Sesame(tmp, base_conf(tmp, port, two_routes(echo, echo2)), port=port)
    yield s
    s.stop()


def get(port, path, host="ville-a.localhost", headers=None, method="GET", body=None, conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h = {"Host": host}
    h.update(headers or {})
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    if conn is None:
        c.close()
    return r, data


def echoed(data):
    j = json.loads(data)
    j["h"] = {}
    for k, v in j["headers"]:
        j["h"].setdefault(k.lower(), []).append(v)
    return j


def test_routing_by_host_and_longest_prefix(gw, echo, echo2):
    r, d = get(gw.port, "/demarches?x=1")
    assert r.status == 200
    j = echoed(d)
    assert j["path"] == "/demarches?x=1"
    assert j["h"]["host"] == ["ville-a.localhost"]
    # /cantine goes to echo2 with the upstream's own Host (preserve_host off)
    r, d = get(gw.port, "/cantine/menu")
    j = echoed(d)
    assert j["h"]["host"] == ["127.0.0.1:%d" % echo2.port]
    # prefix matches on a segment boundary only
    r, d = get(gw.port, "/cantines")
    assert echoed(d)["h"]["host"] == ["ville-a.localhost"]
    # second host name of the same tenant
    r, d = get(gw.port, "/", host="www.ville-a.localhost:%d" % gw.port)
    assert r.status == 200
    # other tenant, other upstream
    r, d = get(gw.port, "/x", host="ville-b.localhost")
    assert r.status == 200
    assert echo2.stats()["requests_total"] >= 2


def test_unknown_host_gets_french_404(gw):
    r, d = get(gw.port, "/", host="inconnu.example")
    assert r.status == 404
    text = d.decode("utf-8")
    assert 'lang="fr"' in text
    assert "Page introuvable" in text
    assert r.getheader("Content-Security-Policy")


def test_forwarding_headers_and_hop_by_hop(gw):
    r, d = get(gw.port, "/", headers={
        "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil",
        "Connection": "close, X-Drop-Me", "X-Drop-Me": "1", "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==", "X-Request-Id": "forged-id",
        "X-Sesame-Account": "admin", "x-sesame-given-name": "Mallory", "X_Sesame_Acr": "eidas3",
        "x_sesame_account": "admin2", "X-Kept": "yes", "X_Forwarded_For": "6.6.6.6",
        "Accept_Language": "fr"})
    j = echoed(d)
    h = j["h"]
    # client-supplied X-Forwarded-* are not trusted from an untrusted peer
    assert h["x-forwarded-for"] == ["127.0.0.1"]
    assert h["x-forwarded-proto"] == ["http"]
    assert h["x-forwarded-host"] == ["ville-a.localhost"]
    for name in ["connection", "x-drop-me", "keep-alive", "proxy-authorization"]:
        assert name not in h, name
    assert h["x-request-id"] != ["forged-id"]
    assert h["x-kept"] == ["yes"]
    for name in h:
        assert not name.replace("_", "-").startswith("x-sesame-"), name
        assert "_" not in name, name
    assert r.getheader("Connection") == "close"


def test_trusted_proxy_headers_kept(tmp, echo):
    port = free_port()
    conf = base_conf(tmp, port, """
[route a]
tenant = ville-a
path = /
upstream = %s
access = public
""" % echo.url, extra_server="trusted_proxies = 127.0.0.0/8\nvia = on")
    s = Sesame(tmp, conf, port=port)
    try:
        r, d = get(port, "/", headers={"X-Forwarded-For": "203.0.113.9",
                                       "X-Forwarded-Proto": "https",
                                       "X-Request-Id": "abc-123"})
        h = echoed(d)["h"]
        assert h["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
        assert h["x-forwarded-proto"] == ["https"]
        assert h["x-request-id"] == ["abc-123"]
        assert h["via"] == ["1.1 sesame"]
    finally:
        s.stop()


def test_keepalive_reuses_upstream_connections(gw, echo):
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    ids = set()
    for i in range(40):
        r, d = get(gw.port, "/k%d" % i, conn=c)
        assert r.status == 200
        ids.add(echoed(d)["connection_id"])
    c.close()
    stats = echo.stats()
    assert stats["requests_total"] >= 40
    # two workers may each open a connection or two; far fewer than 40
    assert stats["connections_total"] <= 5
    assert len(ids) <= 4


def test_large_streamed_response(gw, echo):
    size = 50 * 1024 * 1024
    get(gw.port, "/warm-up")
    base_rss = gw.rss_kib("VmRSS")
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=60)
    c.request("GET", "/__big?size=%d" % size, headers={"Host": "ville-a.localhost"})
    r = c.getresponse()
    assert r.status == 200
    h = hashlib.sha256()
    n = 0
    while True:
        b = r.read(1 << 20)
        if not b:
            break
        h.update(b)
        n += len(b)
        time.sleep(0.001)  # a slowish reader: back-pressure must hold memory down
    c.close()
    assert n == size
    exp = hashlib.sha256()
    c2 = http.client.HTTPConnection("127.0.0.1", echo.port, timeout=60)
    c2.request("GET", "/__big?size=%d" % size)
    r2 = c2.getresponse()
    while True:
        b = r2.read(1 << 20)
        if not b:
            break
        exp.update(b)
    assert h.hexdigest() == exp.hexdigest()
    # the daemon never held the body: its peak resident memory grew far less than 50 MiB
    grown = gw.rss_kib("VmHWM") - base_rss
    assert grown < 16 * 1024, "peak memory grew by %d KiB while streaming 50 MiB" % grown


def test_chunked_response_and_request_body(gw):
    r, d = get(gw.port, "/__big?size=100000&chunked=1")
    assert r.status == 200 and len(d) == 100000
    body = b"x" * 70000
    r, d = get(gw.port, "/upload", method="POST", body=body,
               headers={"Content-Type": "application/octet-stream"})
    j = echoed(d)
    assert j["body_len"] == 70000
    assert j["body_sha256"] == hashlib.sha256(body).hexdigest()
    raw = (b"POST /chunk HTTP/1.1\r\nHost: ville-a.localhost\r\nTransfer-Encoding: chunked\r\n"
           b"Connection: close\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n")
    out, _ = raw_request(gw.port, raw)
    assert status_of(out) == 200
    j = echoed(out.split(b"\r\n\r\n", 1)[1])
    assert j["body_len"] == 11
    assert j["body_sha256"] == hashlib.sha256(b"hello world").hexdigest()


def test_body_over_limit_is_413(gw):
    body = b"y" * (1024 * 1024 + 1)
    raw = (b"POST /up HTTP/1.1\r\nHost: ville-a.localhost\r\nContent-Length: %d\r\n\r\n" % len(body))
    out, closed = raw_request(gw.port, raw)
    assert status_of(out) == 413
    assert closed
    raw = (b"POST /up HTTP/1.1\r\nHost: ville-a.localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
           + b"100000\r\n" + b"z" * 0x100000 + b"\r\n" + b"10\r\n" + b"z" * 16 + b"\r\n0\r\n\r\n")
    out, closed = raw_request(gw.port, raw)
    assert status_of(out) == 413


SMUGGLING = [
    ("CL and TE", b"POST / HTTP/1.1\r\nHost: ville-a.localhost\r\nContent-Length: 4\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("duplicate CL", b"POST / HTTP/1.1\r\nHost: ville-a.localhost\r\nContent-Length: 4\r\n"
                     b"Content-Length: 4\r\n\r\nabcd", 400),
    ("conflicting CL", b"POST / HTTP/1.1\r\nHost: ville-a.localhost\r\nContent-Length: 4\r\n"
                       b"Content-Length: 5\r\n\r\nabcde", 400),
    ("CL list", b"POST / HTTP/1.1\r\nHost: ville-a.localhost\r\nContent-Length: 4, 4\r\n\r\nabcd", 400),
    ("CL sign", b"POST / HTTP/1.1\r\nHost: ville-a.localhost\r\nContent-Length: +4\r\n\r\nabcd", 400),
    ("CL hex", b"POST / HTTP/1.1\r\nHost: ville-a.localhost\r\nContent-Length: 0x4\r\n\r\nabcd", 400),
    ("TE obfuscated", b"POST / HTTP/1.1\r\nHost: ville-a.localhost\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
    ("TE with space before colon", b"POST / HTTP/1.1\r\nHost: ville-a.localhost\r\n"
                                   b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: ville-a.localhost\r\nX-A: a\r\n b\r\n\r\n", 400),
    ("bare LF", b"GET / HTTP/1.1\nHost: ville-a.localhost\n\n", 400),
    ("bare LF in headers", b"GET / HTTP/1.1\r\nHost: ville-a.localhost\nX: y\r\n\r\n", 400),
    ("control char", b"GET / HTTP/1.1\r\nHost: ville-a.localhost\r\nX-A: a\x01b\r\n\r\n", 400),
    ("NUL", b"GET / HTTP/1.1\r\nHost: ville-a.localhost\r\nX-A: a\x00b\r\n\r\n", 400),
    ("no host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("two hosts", b"GET / HTTP/1.1\r\nHost: ville-a.localhost\r\nHost: ville-b.localhost\r\n\r\n", 400),
    ("TE in 1.0", b"POST / HTTP/1.0\r\nHost: ville-a.localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("HTTP/2.0 line", b"GET / HTTP/2.0\r\nHost: ville-a.localhost\r\n\r\n", 505),
    ("space in target", b"GET /a b HTTP/1.1\r\nHost: ville-a.localhost\r\n\r\n", 400),
    ("request line too long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: ville-a.localhost\r\n\r\n", 414),
    ("headers too large", b"GET / HTTP/1.1\r\nHost: ville-a.localhost\r\n" + b"X-Big: " + b"b" * 40000 + b"\r\n\r\n", 431),
    ("too many headers", b"GET / HTTP/1.1\r\nHost: ville-a.localhost\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(150)) + b"\r\n", 431),
    ("bad chunk size", b"POST / HTTP/1.1\r\nHost: ville-a.localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
]


@pytest.mark.parametrize("name,raw,status", SMUGGLING, ids=[s[0] for s in SMUGGLING])
def test_smuggling_vectors_refused(gw, echo, name, raw, status):
    before = echo.stats()["requests_total"]
    out, closed = raw_request(gw.port, raw + b"GET /smuggled HTTP/1.1\r\nHost: ville-a.localhost\r\n\r\n")
    assert status_of(out) == status, out[:200]
    assert closed, "connection must be closed after a refused request"
    assert out.count(b"HTTP/1.1 ") == 1, "nothing after the refusal may be processed"
    after = echo.stats()["requests_total"]
    assert after == before  # nothing reached the upstream


def test_slow_header_client_dropped(gw):
    s = socket.create_connection(("127.0.0.1", gw.port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: ville-a.localhost\r\n")
    start = time.time()
    s.settimeout(5)
    try:
        while True:
            s.sendall(b"X-Slow: 1\r\n")
            time.sleep(0.2)
            if time.time() - start > 4:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        data = s.recv(100)
    except (ConnectionResetError, socket.timeout):
        data = b""
    s.close()
    elapsed = time.time() - start
    assert data == b"" and elapsed < 3.5, "slow client must be dropped at header_timeout (1s)"


def test_502_and_504_pages(tmp, echo):
    port = free_port()
    dead = free_port()
    conf = base_conf(tmp, port, """
[route a]
tenant = ville-a
path = /
upstream = %s
access = public

[route dead]
tenant = ville-a
path = /mort
upstream = http://127.0.0.1:%d
access = public
""" % (echo.url, dead))
    s = Sesame(tmp, conf, port=port)
    try:
        r, d = get(port, "/mort/x")
        assert r.status == 502
        assert "Service indisponible" in d.decode()
        r, d = get(port, "/__slow?ms=3000")
        assert r.status == 504
        assert "trop de temps à répondre" in d.decode()
        r, d = get(port, "/mort/x", headers={"Accept": "application/json"})
        assert r.status == 502 and json.loads(d)["status"] == 502
        # still up
        r, d = get(port, "/ok")
        assert r.status == 200
        assert s.proc.alive()
    finally:
        s.stop()


def test_access_log_json(gw):
    get(gw.port, "/journal?secret=token123", headers={"Cookie": "sesame=abc"})
    time.sleep(0.2)
    lines = gw.access()
    assert lines, "access log is empty"
    last = [l for l in lines if l["path"] == "/journal"]
    assert last, lines
    e = last[-1]
    for key in ["time", "tenant", "route", "method", "path", "status", "bytes", "duration_ms",
                "upstream_ms", "request_id"]:
        assert key in e
    assert e["tenant"] == "ville-a" and e["route"] == "a-home" and e["status"] == 200
    with open(gw.access_log) as f:
        text = f.read()
    assert "token123" not in text and "sesame=abc" not in text


def test_sighup_good_and_broken_config(tmp, echo, echo2):
    port = free_port()
    routes = """
[route a]
tenant = ville-a
path = /
upstream = %s
access = public
""" % echo.url
    s = Sesame(tmp, base_conf(tmp, port, routes), port=port)
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        r, d = get(port, "/x", conn=c)
        assert r.status == 200
        r, d = get(port, "/nouveau/y", conn=c)
        assert echoed(d)["h"]["host"] == ["ville-a.localhost"]
        # good reload: a new route to echo2 with preserve_host off
        s.write_conf(base_conf(tmp, port, routes + """
[route nouveau]
tenant = ville-a
path = /nouveau
upstream = %s
access = public
preserve_host = off
""" % echo2.url))
        s.reload()
        deadline = time.time() + 5
        while time.time() < deadline:
            r, d = get(port, "/nouveau/y")
            if echoed(d)["h"]["host"] == ["127.0.0.1:%d" % echo2.port]:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the reloaded route never took effect")
        # the keep-alive connection opened before the reload still works
        r, d = get(port, "/x", conn=c)
        assert r.status == 200
        # broken reload: refused, logged with file:line, old config serving
        s.write_conf(base_conf(tmp, port, routes + "\n[route broken]\ntenant = nulle-part\npath = /b\n"
                                                  "upstream = http://127.0.0.1:1\nbogus_key = 1\n"))
        s.reload()
        deadline = time.time() + 5
        while "reload refused" not in s.errors() and time.time() < deadline:
            time.sleep(0.1)
        errs = s.errors()
        assert "reload refused" in errs
        assert "%s:" % s.conf_path in errs and "bogus_key" in errs and "nulle-part" in errs
        r, d = get(port, "/nouveau/y", conn=c)
        assert echoed(d)["h"]["host"] == ["127.0.0.1:%d" % echo2.port]
        assert s.proc.alive()
    finally:
        s.stop()


def test_sigterm_drains_in_flight_request(gw):
    result = {}

    def slow():
        try:
            r, d = get(gw.port, "/__slow?ms=800")
            result["status"] = r.status
            result["body"] = d
        except Exception as e:  # noqa: BLE001
            result["error"] = repr(e)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    gw.proc.signal(signal.SIGTERM)
    time.sleep(0.1)
    # no new connections once draining
    with pytest.raises(OSError):
        c = socket.create_connection(("127.0.0.1", gw.port), timeout=1)
        c.sendall(b"GET / HTTP/1.1\r\nHost: ville-a.localhost\r\n\r\n")
        if not c.recv(10):
            raise OSError("closed")
    t.join(10)
    assert result.get("status") == 200, result
    assert gw.proc.wait(10) == 0


def test_pipelined_requests(gw):
    raw = b"".join(b"GET /p%d HTTP/1.1\r\nHost: ville-a.localhost\r\n\r\n" % i for i in range(5))
    raw += b"GET /last HTTP/1.1\r\nHost: ville-a.localhost\r\nConnection: close\r\n\r\n"
    out, closed = raw_request(gw.port, raw)
    assert out.count(b"HTTP/1.1 200") == 6
    assert closed


def test_http10_and_head(gw):
    out, closed = raw_request(gw.port, b"GET /ten HTTP/1.0\r\nHost: ville-a.localhost\r\n\r\n")
    assert status_of(out) == 200 and closed
    out, closed = raw_request(gw.port, b"HEAD /h HTTP/1.1\r\nHost: ville-a.localhost\r\n"
                                       b"Connection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert status_of(out) == 200 and body == b""


def test_health_endpoint(gw):
    r, d = get(gw.port, "/sesame/health")
    assert r.status == 200 and d == b"ok\n"
    import email.utils
    assert abs(email.utils.parsedate_to_datetime(r.getheader("Date")).timestamp() - time.time()) < 5


def test_tls_listener(tmp, echo):
    import ssl
    import subprocess
    pki = os.path.join(tmp, "pki")
    subprocess.run(["/usr/bin/python3", os.path.join(os.path.dirname(__file__), "..", "mockfc", "pki.py"),
                    "--dir", pki, "--name", "gw", "--host", "ville-a.localhost", "--host", "127.0.0.1"],
                   check=True, capture_output=True)
    port = free_port()
    tls_port = free_port()
    conf = base_conf(tmp, port, """
[route a]
tenant = ville-a
path = /
upstream = %s
access = public
""" % echo.url, extra_server="listen = 127.0.0.1:%d tls\ntls_certificate = %s/gw.pem\n"
                                  "tls_certificate_key = %s/gw.key" % (tls_port, pki, pki))
    s = Sesame(tmp, conf, port=port)
    try:
        wait_port(tls_port)
        ctx = ssl.create_default_context(cafile=os.path.join(pki, "ca.pem"))
        c = http.client.HTTPSConnection("127.0.0.1", tls_port, context=ctx, timeout=10)
        c.request("GET", "/tls", headers={"Host": "ville-a.localhost"})
        r = c.getresponse()
        j = echoed(r.read())
        assert r.status == 200
        assert j["h"]["x-forwarded-proto"] == ["https"]
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
        c.close()
        # TLS 1.1 and older are refused
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(os.path.join(pki, "ca.pem"))
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.minimum_version = ssl.TLSVersion.TLSv1
        with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
            with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw:
                with old.wrap_socket(raw, server_hostname="127.0.0.1"):
                    pass
        # the plain listener is still plain
        r, d = get(port, "/plain")
        assert echoed(d)["h"]["x-forwarded-proto"] == ["http"]
    finally:
        s.stop()


def test_bad_tls_key_refuses_to_start(tmp):
    port = free_port()
    bad = os.path.join(tmp, "bad.pem")
    with open(bad, "w") as f:
        f.write("not a certificate\n")
    os.chmod(bad, 0o600)
    conf = base_conf(tmp, port, """
[route a]
tenant = ville-a
path = /
upstream = http://127.0.0.1:9
access = public
""", extra_server="listen = 127.0.0.1:%d tls\ntls_certificate = %s\ntls_certificate_key = %s"
                  % (free_port(), bad, bad))
    s = Sesame(tmp, conf, port=port, wait=False)
    assert s.proc.wait(10) != 0
    assert "tls_certificate" in s.proc.output()


def test_long_request_line_refused_before_the_line_ends(gw):
    # no CR or LF: the 414 must come as soon as the line outgrows max_request_line (8k)
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    s.sendall(b"GET /" + b"a" * 10000)
    data = s.recv(200)
    s.close()
    assert status_of(data) == 414



def test_https_upstream_verified(tmp):
    import subprocess
    pki = os.path.join(tmp, "upki")
    subprocess.run(["/usr/bin/python3", os.path.join(os.path.dirname(__file__), "..", "mockfc", "pki.py"),
                    "--dir", pki, "--name", "portal", "--host", "localhost"],
                   check=True, capture_output=True)
    secure = Echo(tmp, tls=(os.path.join(pki, "portal.pem"), os.path.join(pki, "portal.key")))
    port = free_port()
    conf = base_conf(tmp, port, """
[route ok]
tenant = ville-a
path = /
upstream = https://localhost:%d
upstream_ca_file = %s/ca.pem
access = public

[route wrong-name]
tenant = ville-a
path = /nom
upstream = https://127.0.0.1:%d
upstream_ca_file = %s/ca.pem
access = public

[route untrusted]
tenant = ville-a
path = /inconnu
upstream = https://localhost:%d
access = public
""" % (secure.port, pki, secure.port, pki, secure.port))
    s = Sesame(tmp, conf, port=port)
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for i in range(10):
            r, d = get(port, "/tls-%d" % i, conn=c)
            assert r.status == 200, d[:300]
            assert echoed(d)["path"] == "/tls-%d" % i
        c.close()
        assert secure.stats()["connections_total"] <= 4  # pooled TLS connections reused
        # the certificate is for "localhost": 127.0.0.1 does not match it
        r, d = get(port, "/nom/x")
        assert r.status == 502
        # without the private CA the certificate is not trusted
        r, d = get(port, "/inconnu/x")
        assert r.status == 502
        errors = s.errors()
        assert "certificate verify failed" in errors, errors[-2000:]
    finally:
        s.stop()
        secure.stop()


def test_upstream_ca_file_only_for_https(tmp):
    port = free_port()
    ca = os.path.join(tmp, "ca.pem")
    with open(ca, "w") as f:
        f.write("x\n")
    path = os.path.join(tmp, "bad.conf")
    with open(path, "w") as f:
        f.write(base_conf(tmp, port, """
[route a]
tenant = ville-a
upstream = http://127.0.0.1:9
upstream_ca_file = %s
access = public
""" % ca))
    rc, out = check_config(path)
    assert rc != 0 and "upstream_ca_file: [route a]: upstream_ca_file is for https:// upstreams only" in out
