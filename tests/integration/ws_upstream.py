"""A WebSocket echo upstream written with the standard library only (RFC 6455
handshake and frames by hand), run in a thread of the test process.

On a WebSocket handshake it answers 101, then sends one text message: the
JSON object of the request headers it received (so the test sees the
identity Sésame passed), then echoes every text or binary message back and
answers a close frame with a close frame. A request that is not a WebSocket
handshake gets 200 with the same JSON (so a test sees what was forwarded).
"""

import base64
import hashlib
import json
import os
import socket
import struct
import threading

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B65"


def accept_key(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def read_frame(sock):
    """(opcode, payload); unmasks when masked."""
    b0, b1 = read_exact(sock, 2)
    op = b0 & 0x0F
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", read_exact(sock, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", read_exact(sock, 8))[0]
    mask = read_exact(sock, 4) if b1 & 0x80 else None
    data = read_exact(sock, n)
    if mask:
        data = bytes(c ^ mask[i % 4] for i, c in enumerate(data))
    return op, data


def frame(op, payload, masked=False):
    head = bytes([0x80 | op])
    n = len(payload)
    mbit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if masked:
        mask = os.urandom(4)
        return head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    return head + payload


def read_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.append((k.strip(), v.strip()))
    return lines[0], headers, rest


class WsUpstream:
    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.requests = []  # (request line, headers) of every request
        self.open = 0       # WebSocket connections currently open
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            line, headers, _ = read_head(c)
            with self.lock:
                self.requests.append((line, headers))
            h = {k.lower(): v for k, v in headers}
            body = json.dumps({"line": line, "headers": headers}).encode()
            if h.get("upgrade", "").lower() != "websocket":
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                return
            c.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n"
                       % accept_key(h["sec-websocket-key"])).encode())
            with self.lock:
                self.open += 1
            try:
                c.sendall(frame(1, body))
                while True:
                    op, data = read_frame(c)
                    if op == 8:
                        c.sendall(frame(8, data[:2]))
                        return
                    if op == 9:
                        c.sendall(frame(10, data))
                    elif op in (1, 2):
                        c.sendall(frame(op, data))
            finally:
                with self.lock:
                    self.open -= 1
        except (EOFError, OSError):
            pass
        finally:
            c.close()

    def stop(self):
        self.sock.close()
