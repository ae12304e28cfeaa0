#!/usr/bin/python3
"""A stand-in for a commune's citizen-relations software, for the tests of
the `http` account plugin (plugins/http/README.md). Python stdlib only.

Listens over HTTPS on 127.0.0.1, checks the X-Sesame-Timestamp and
X-Sesame-Signature headers of every POST (HMAC-SHA256 of
"<timestamp>.<body>" with the shared secret, timestamp within 300 s), and
answers according to --mode:
  ok         200 with an account chosen from the sub (see answer())
  slow       like ok, after sleeping --delay seconds
  500once    500 to the first request, then like ok
  500        500 to every request
  400        400 to every request
  down       accepts TCP connections and closes them at once (no TLS, no HTTP)
A request with a bad signature gets 401 in every HTTP mode.

Every request (or connection, in mode down) is appended to --log as one JSON
line: {"n": N, "verified": bool, "status": CODE, "body": {...} or null}.
Prints "PORT <n>" on stdout once listening (--port 0 picks a free port).
"""

import argparse
import hashlib
import hmac
import json
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 64 * 1024
MAX_SKEW = 300


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.count = 0
        with open(args.secret_file, "rb") as f:
            self.secret = f.read().split(b"\n")[0].rstrip(b"\r")

    def record(self, entry):
        with self.lock:
            self.count += 1
            entry["n"] = self.count
            with open(self.args.log, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry, ensure_ascii=False) + "\n")
            return self.count


def verify(secret, timestamp, signature, body):
    if not timestamp or not signature or not timestamp.isdigit():
        return False
    if abs(time.time() - int(timestamp)) > MAX_SKEW:
        return False
    if not signature.startswith("v1="):
        return False
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, signature[3:])


def answer(identity):
    """The account the fake software knows for an identity (by its sub)."""
    sub = identity.get("sub", "")
    claims = identity.get("claims", {})
    if sub.startswith("deny"):
        return {"account": None, "reason": "deny"}
    if sub.startswith("link"):
        return {"account": None, "reason": "link_only"}
    if sub.startswith("garbage"):
        return {"account_id": 42}
    if sub.startswith("both"):
        return {"account_id": "x", "account": None}
    attrs = {"quartier": "Centre", "tenant_seen": identity.get("tenant", "")}
    if "family_name" in claims:
        attrs["family_name_seen"] = claims["family_name"]
    return {"account_id": "crm-" + sub[:16], "attributes": attrs}


def make_handler(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            pass

        def reply(self, status, obj, raw=None):
            data = raw if raw is not None else json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            if length < 0 or length > MAX_BODY:
                self.reply(413, {"error": "too large"})
                return
            body = self.rfile.read(length)
            ok = verify(state.secret, self.headers.get("X-Sesame-Timestamp"),
                        self.headers.get("X-Sesame-Signature"), body)
            try:
                identity = json.loads(body)
            except ValueError:
                identity = None
            mode = state.args.mode
            with state.lock:
                n = state.count + 1
            if not ok:
                status = 401
            elif mode == "500" or (mode == "500once" and n == 1):
                status = 500
            elif mode == "400":
                status = 400
            else:
                status = 200
            state.record({"verified": ok, "status": status, "body": identity,
                          "content_type": self.headers.get("Content-Type")})
            if mode == "slow":
                time.sleep(state.args.delay)
            if status == 200:
                if isinstance(identity, dict) and identity.get("sub", "").startswith("notjson"):
                    self.reply(200, None, raw=b"this is not json")
                else:
                    self.reply(200, answer(identity))
            else:
                self.reply(status, {"error": "status %d" % status})

    return Handler


def serve_down(state, sock):
    while True:
        conn, _ = sock.accept()
        state.record({"verified": False, "status": None, "body": None})
        conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--secret-file", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--mode", default="ok",
                    choices=["ok", "slow", "500once", "500", "400", "down"])
    ap.add_argument("--delay", type=float, default=5.0)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()
    state = State(args)

    if args.mode == "down":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", args.port))
        sock.listen(16)
        print("PORT %d" % sock.getsockname()[1], flush=True)
        serve_down(state, sock)
        return

    httpd = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(state))
    httpd.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    print("PORT %d" % httpd.server_address[1], flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
