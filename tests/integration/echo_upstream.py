#!/usr/bin/python3
"""Test upstream for Sésame: echoes every request as JSON.

Usage: echo_upstream.py --port N [--host 127.0.0.1] [--ready-file F]

Plain HTTP/1.1, threaded, keep-alive, Content-Length on every response except the chunked /__big.
`--port 0` binds a free port; `READY <port>` is printed on stdout and written (same line) to the
ready file, atomically, once listening. One line per request on stderr (method, path without
query, status).

Any path (any method) answers 200 application/json:
  {"method", "path" (with query), "http_version", "headers": [[name, value], ...] in received
   order with the received case, "body_len", "body_sha256" (hex), "body_text" (the body decoded
   as UTF-8 when it is at most 64 KiB and valid UTF-8, else null), "connection_id" (1, 2, ... per
   TCP connection, in order of each connection's first counted request), "requests_on_connection",
   "connections_total", "requests_total"}
Request bodies may come with Content-Length or chunked transfer-encoding (trailers ignored).

Special paths:
  /__big?size=BYTES[&chunked=1]  BYTES bytes of the pattern "byte at offset i is i % 251"
                                 (bytes(range(251)) repeated, cut at BYTES), streamed in blocks
                                 of 64256 bytes, with Content-Length, or chunked when chunked=1.
                                 harness.big_pattern_sha256(size) computes the expected digest.
  /__slow?ms=N                   waits N ms (at most 120000) then echoes.
  /__close                       echoes with "Connection: close", then closes the connection.
  /__stats                       {"connections_total", "requests_total", "tcp_connections_total"}
  /__log                         the last 1000 counted requests: [{"method", "path", "headers",
                                 "connection_id"}]
/__stats and /__log are not counted in requests_total, and a connection that carried only them is
not counted in connections_total (tcp_connections_total counts every accepted connection).
"""

import argparse
import collections
import hashlib
import http.server
import json
import os
import socket
import sys
import threading
import time
import urllib.parse

PATTERN_PERIOD = 251
BLOCK = bytes(range(PATTERN_PERIOD)) * 256  # 64256 bytes: every block starts at offset 0 mod 251
MAX_BIG = 1 << 40
MAX_SLOW_MS = 120000
TEXT_LIMIT = 64 * 1024


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.connections_total = 0
        self.requests_total = 0
        self.tcp_connections_total = 0
        self.log = collections.deque(maxlen=1000)


class BodyError(Exception):
    pass


def log_line(text):
    sys.stderr.write("%s echo %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), text))
    sys.stderr.flush()


class EchoHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "echo-upstream"
    disable_nagle_algorithm = True
    sys_version = ""

    def version_string(self):
        return self.server_version
    timeout = 120

    def setup(self):
        super().setup()
        self.connection_id = None
        self.requests_on_connection = 0
        with self.server.stats.lock:
            self.server.stats.tcp_connections_total += 1

    def __getattr__(self, name):
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    # -- request body

    def _read_exact(self, n, sink):
        while n > 0:
            chunk = self.rfile.read(min(n, 65536))
            if not chunk:
                raise BodyError("truncated body")
            sink(chunk)
            n -= len(chunk)

    def _read_body(self):
        digest = hashlib.sha256()
        state = {"len": 0, "text": bytearray()}

        def sink(chunk):
            digest.update(chunk)
            state["len"] += len(chunk)
            if len(state["text"]) <= TEXT_LIMIT:
                state["text"] += chunk[:TEXT_LIMIT + 1 - len(state["text"])]

        te = self.headers.get_all("Transfer-Encoding")
        cl = self.headers.get_all("Content-Length")
        if te:
            codings = [c.strip().lower() for c in ",".join(te).split(",") if c.strip()]
            if codings != ["chunked"]:
                raise BodyError("unsupported transfer-encoding")
            if cl:
                self.close_connection = True
            while True:
                line = self.rfile.readline(1024)
                if not line.endswith(b"\n"):
                    raise BodyError("bad chunk size line")
                size_text = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise BodyError("bad chunk size")
                if size < 0:
                    raise BodyError("bad chunk size")
                if size == 0:
                    for _ in range(100):
                        trailer = self.rfile.readline(8192)
                        if trailer in (b"\r\n", b"\n"):
                            break
                        if not trailer:
                            raise BodyError("truncated trailers")
                    else:
                        raise BodyError("too many trailers")
                    break
                self._read_exact(size, sink)
                if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                    raise BodyError("missing CRLF after chunk")
        elif cl:
            if len(set(v.strip() for v in cl)) != 1 or not cl[0].strip().isdigit():
                raise BodyError("bad Content-Length")
            self._read_exact(int(cl[0].strip()), sink)
        text = None
        if state["len"] <= TEXT_LIMIT:
            try:
                text = bytes(state["text"]).decode("utf-8")
            except UnicodeDecodeError:
                text = None
        return state["len"], digest.hexdigest(), text

    # -- responses

    def _send_json(self, status, obj, close=False):
        body = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.close_connection = True
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self):
        try:
            body_len, body_sha, body_text = self._read_body()
        except BodyError as exc:
            self._send_json(400, {"error": str(exc)}, close=True)
            return
        split = urllib.parse.urlsplit(self.path)
        path = split.path
        query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        stats = self.server.stats
        if path == "/__stats":
            with stats.lock:
                obj = {"connections_total": stats.connections_total,
                       "requests_total": stats.requests_total,
                       "tcp_connections_total": stats.tcp_connections_total}
            self._send_json(200, obj)
            return
        if path == "/__log":
            with stats.lock:
                obj = list(stats.log)
            self._send_json(200, obj)
            return
        headers = [[name, value] for name, value in self.headers.items()]
        with stats.lock:
            if self.connection_id is None:
                stats.connections_total += 1
                self.connection_id = stats.connections_total
            stats.requests_total += 1
            self.requests_on_connection += 1
            stats.log.append({"method": self.command, "path": self.path, "headers": headers,
                              "connection_id": self.connection_id, "body_len": body_len,
                              "body_sha256": body_sha})
            counters = {"connections_total": stats.connections_total,
                        "requests_total": stats.requests_total}
        if path == "/__big":
            self._big(query)
            return
        if path == "/__slow":
            try:
                ms = int(query.get("ms", "0"))
            except ValueError:
                ms = -1
            if not 0 <= ms <= MAX_SLOW_MS:
                self._send_json(400, {"error": "ms must be in 0..%d" % MAX_SLOW_MS})
                return
            time.sleep(ms / 1000.0)
        echo = {"method": self.command, "path": self.path, "http_version": self.request_version,
                "headers": headers, "body_len": body_len, "body_sha256": body_sha,
                "body_text": body_text, "connection_id": self.connection_id,
                "requests_on_connection": self.requests_on_connection}
        echo.update(counters)
        self._send_json(200, echo, close=(path == "/__close"))

    def _big(self, query):
        size_text = query.get("size", "")
        if not size_text.isdigit() or int(size_text) > MAX_BIG:
            self._send_json(400, {"error": "size must be an integer in 0..2^40"})
            return
        size = int(size_text)
        chunked = query.get("chunked") == "1" and self.request_version != "HTTP/1.0"
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(size))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        left = size
        while left > 0:
            block = BLOCK if left >= len(BLOCK) else BLOCK[:left]
            if chunked:
                self.wfile.write(b"%x\r\n" % len(block) + block + b"\r\n")
            else:
                self.wfile.write(block)
            left -= len(block)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def log_request(self, code="-", size="-"):
        path = urllib.parse.urlsplit(self.path).path if hasattr(self, "path") else "-"
        log_line("%s %s %s" % (getattr(self, "command", "-"), path[:200], code))

    def log_error(self, fmt, *args):
        log_line("request error: %s" % (args[0] if args and isinstance(args[0], int) else fmt))


class EchoServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, family):
        self.address_family = family
        self.stats = Stats()
        super().__init__(address, EchoHandler)

    def handle_error(self, request, client_address):
        log_line("connection error: %s" % (sys.exc_info()[0].__name__,))


def main(argv=None):
    parser = argparse.ArgumentParser(description="Echo upstream for Sésame tests.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ready-file", default=None)
    parser.add_argument("--tls-cert", default=None, help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", default=None)
    args = parser.parse_args(argv)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    server = EchoServer((args.host, args.port), family)
    if args.tls_cert:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    line = "READY %d" % port
    print(line, flush=True)
    if args.ready_file:
        tmp = "%s.tmp.%d" % (args.ready_file, os.getpid())
        with open(tmp, "w", encoding="ascii") as f:
            f.write(line + "\n")
        os.replace(tmp, args.ready_file)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
