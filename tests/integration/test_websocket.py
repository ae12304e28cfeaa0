"""WebSocket through Sésame: the handshake is decided like any request of
its route, then the bytes are tunnelled both ways; a revoked session closes
the tunnel within websocket_recheck. Real processes (redis, the mock
FranceConnect, sesame) and a standard-library WebSocket echo upstream
(ws_upstream.py)."""

import base64
import json
import os
import socket
import subprocess
import time

import pytest

import signin_env  # noqa: F401  (puts tests/mockfc on sys.path)
import harness  # noqa: E402
from sesame_env import Echo, Redis, Sesame, free_port
from sessions_env import tool_binary
from signin_env import Browser, clients_for, gateway_conf, sign_in
from ws_upstream import WsUpstream, frame, read_frame

HOST = "ville-a.localhost"


class WsStack:
    def __init__(self, tmp):
        self.port = free_port()
        self.procs = []
        self.redis = Redis(tmp)
        self.procs.append(self.redis)
        self.mock = harness.start_mockfc(tmp, clients_for(self.port))
        self.procs.append(self.mock)
        self.echo = Echo(tmp)
        self.procs.append(self.echo)
        self.ws = WsUpstream()
        self.procs.append(self.ws)
        routes = """
[route a-ws]
tenant = ville-a
path = /ws
upstream = {ws}
claims = given_name

[route a-ws-public]
tenant = ville-a
path = /public-ws
upstream = {ws}
access = public
""".format(ws=self.ws.url)
        text = gateway_conf(tmp, self.port, self.redis.port, self.mock, self.echo.url,
                            extra_routes=routes)
        text = text.replace("log_level = debug\n", "log_level = debug\nwebsocket_recheck = 1s\n"
                            "websocket_idle_timeout = 4s\n", 1)
        self.gw = Sesame(tmp, text, port=self.port)
        self.procs.append(self.gw)

    def stop(self):
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception:  # noqa: BLE001
                pass


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = WsStack(str(tmp_path_factory.mktemp("ws")))
    yield s
    s.stop()


def signed_in(stack, login="marie"):
    b = Browser(stack.port)
    sign_in(b, stack.mock, stack.port, login)
    return "; ".join("%s=%s" % kv for kv in b.cookies[HOST].items())


def handshake(stack, path="/ws", cookie=None, extra=""):
    """Opens a socket and sends a browser's WebSocket handshake; returns
    (socket, status, head text)."""
    s = socket.create_connection(("127.0.0.1", stack.port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nOrigin: http://%s:%d\r\n"
           "Sec-Fetch-Mode: websocket\r\nX-Sesame-Account: spoofed\r\n%s%s\r\n"
           % (path, HOST, stack.port, key, HOST, stack.port,
              "Cookie: %s\r\n" % cookie if cookie else "", extra))
    s.sendall(req.encode())
    data = b""
    while not data.endswith(b"\r\n\r\n"):  # byte by byte: the first frame may follow
        chunk = s.recv(1)
        if not chunk:
            break
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    status = int(head.split(" ", 2)[1]) if head else 0
    return s, status, head


def test_handshake_without_session_refused(stack):
    before = len(stack.ws.requests)
    s, status, head = handshake(stack)
    s.close()
    assert status == 401, head
    assert len(stack.ws.requests) == before  # never reached the upstream


def test_identity_and_messages_both_ways(stack):
    cookie = signed_in(stack)
    s, status, head = handshake(stack, cookie=cookie)
    assert status == 101, head
    assert "upgrade: websocket" in head.lower()
    op, data = read_frame(s)  # sent by the upstream first
    assert op == 1
    got = {k.lower(): v for k, v in json.loads(data)["headers"]}
    assert got["x-sesame-account"] == harness.expected_sub("ville-a-client", "marie")
    assert got["x-sesame-account"] != "spoofed"
    assert "x-sesame-given-name" in got
    assert "sesame=" not in got.get("cookie", "")
    s.sendall(frame(1, "bonjour, mairie".encode(), masked=True))
    assert read_frame(s) == (1, "bonjour, mairie".encode())
    big = os.urandom(200000)  # 64-bit length, several reads
    s.sendall(frame(2, big, masked=True))
    assert read_frame(s) == (2, big)
    s.sendall(frame(8, b"\x03\xe8", masked=True))
    assert read_frame(s)[0] == 8
    s.close()


def test_public_route_without_identity(stack):
    s, status, head = handshake(stack, path="/public-ws")
    assert status == 101, head
    op, data = read_frame(s)
    got = {k.lower() for k, _ in json.loads(data)["headers"]}
    assert not any(k.startswith("x-sesame-") for k in got)
    s.close()


def test_revocation_closes_open_websocket(stack):
    cookie = signed_in(stack)
    s, status, head = handshake(stack, cookie=cookie)
    assert status == 101, head
    read_frame(s)
    s.sendall(frame(1, b"ping", masked=True))
    assert read_frame(s) == (1, b"ping")
    sub = harness.expected_sub("ville-a-client", "marie")
    out = subprocess.run([tool_binary(), "-c", stack.gw.conf_path, "--tenant", "ville-a", "revoke",
                          sub], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    t0 = time.monotonic()
    s.settimeout(3.5)  # websocket_recheck = 1s, plus the cache and the loop turn
    closed = False
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
    except socket.timeout:
        pass
    except ConnectionResetError:
        closed = True
    s.close()
    assert closed, "still open %.1fs after the revocation" % (time.monotonic() - t0)
    # and a new handshake with the same cookie is refused
    s, status, head = handshake(stack, cookie=cookie)
    s.close()
    assert status == 401, head
    assert "WebSocket closed: the session is no longer valid" in stack.gw.errors()


def test_idle_websocket_closed(stack):
    s, status, head = handshake(stack, path="/public-ws")
    assert status == 101, head
    read_frame(s)
    t0 = time.monotonic()
    s.settimeout(8)
    assert s.recv(100) == b""  # websocket_idle_timeout = 4s
    assert 3 <= time.monotonic() - t0 < 7
    s.close()


def test_other_upgrades_are_not_tunnelled(stack):
    cookie = signed_in(stack)
    s = socket.create_connection(("127.0.0.1", stack.port), timeout=5)
    s.sendall(("GET /ws HTTP/1.1\r\nHost: %s:%d\r\nCookie: %s\r\nUpgrade: h2c\r\n"
               "Connection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"
               "Accept: application/json\r\n\r\n" % (HOST, stack.port, cookie)).encode())
    data = b""
    s.settimeout(5)
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data and b'"headers"' in data and data.rstrip().endswith(b"}"):
            break
    s.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    body = json.loads(data.split(b"\r\n\r\n", 1)[1])
    names = {k.lower() for k, _ in body["headers"]}
    assert "upgrade" not in names and "http2-settings" not in names


def test_malformed_websocket_handshake_refused(stack):
    cookie = signed_in(stack)
    s = socket.create_connection(("127.0.0.1", stack.port), timeout=5)
    s.sendall(("POST /ws HTTP/1.1\r\nHost: %s:%d\r\nCookie: %s\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Accept: application/json\r\nContent-Length: 0\r\n\r\n"
               % (HOST, stack.port, cookie)).encode())
    data = s.recv(4096)
    s.close()
    assert data.startswith(b"HTTP/1.1 400"), data[:200]
