"""nginx as the upstream of Sésame, for the canonical-request tests
(test_canonical.py): a real nginx on a free loopback port, serving a
document root the test creates, with echo locations and an access log that
records what nginx acted on; plus a two-tenant Sésame stack in front of it
(redis-server, the mock FranceConnect with three clients, sesame).

nginx runs in the foreground as the current user, everything under its own
directory: `nginx -p DIR -c DIR/nginx.conf -g 'daemon off; pid DIR/nginx.pid;
error_log stderr;'` (Debian 12 package `nginx`, see scripts/install-deps).
nginx resolves paths its own way (merge_slashes on, it decodes %XX and
removes dot segments itself): that is the point, the test checks that what
it receives is already the canonical path Sésame decided on.
"""

import json
import os
import shutil
import socket
import time

import signin_env  # noqa: F401  (puts tests/mockfc on sys.path)
import harness  # noqa: E402
from sesame_env import Proc, Redis, Sesame, free_port, wait_port  # noqa: E402
from signin_env import Browser, sign_in  # noqa: E402

MARKER = "PROTECTED-CONTENT-7f3a"
HOST_A = "ville-a.localhost"
HOST_B = "ville-b.localhost"

# What the echo locations answer: what nginx acted on, and the identity it got.
ECHO_BODY = ('"host=$http_host uri=$request_uri path=$uri account=$http_x_sesame_account '
             'provider=$http_x_sesame_provider\\n"')

# One JSON object a line; escape=json keeps every byte readable.
LOG_FORMAT = ("'{\"id\":\"$http_x_case_id\",\"request_uri\":\"$request_uri\",\"uri\":\"$uri\","
              "\"host\":\"$http_host\",\"status\":\"$status\",\"account\":\"$http_x_sesame_account\","
              "\"provider\":\"$http_x_sesame_provider\",\"xfh\":\"$http_x_forwarded_host\"}'")

NGINX_CONF = """# nginx upstream for test_canonical.py (generated)
{user}
worker_processes 1;
events {{
    worker_connections 512;
}}
http {{
    types {{
        text/html html;
        text/css css;
    }}
    default_type text/plain;
    log_format canon escape=json {log_format};
    access_log {dir}/access.log canon;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    keepalive_timeout 10s;

    server {{
        listen 127.0.0.1:{port};
        server_name _;
        root {dir}/www;

        location / {{
        }}
        location /echo/ {{
            return 200 {echo};
        }}
        location = /whoami {{
            return 200 {echo};
        }}
        location /private/echo {{
            return 200 {echo};
        }}
        location /agents/echo {{
            return 200 {echo};
        }}
        location /static/echo {{
            return 200 {echo};
        }}
    }}
}}
"""

DOCROOT = {
    "private/secret.html": "<p>%s private/secret.html</p>\n" % MARKER,
    "private/index.html": "<p>%s private/index.html</p>\n" % MARKER,
    "agents/secret.html": "<p>%s agents/secret.html</p>\n" % MARKER,
    "agents/index.html": "<p>%s agents/index.html</p>\n" % MARKER,
    "static/index.html": "<p>public index</p>\n",
    "static/app.css": "/* public stylesheet */ body { color: #000091; }\n",
    "index.html": "<p>home page</p>\n",
}


def nginx_binary():
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if path is None:
        raise RuntimeError("nginx not found (Debian package `nginx`: run scripts/install-deps)")
    return path


class Nginx:
    """A private nginx instance: its own prefix directory, port, pid file and
    access log; stop() ends it (SIGTERM to the master, which ends its worker)."""

    def __init__(self, tmpdir):
        self.dir = os.path.join(tmpdir, "nginx")
        for sub in ("tmp", "www"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        for rel, text in DOCROOT.items():
            p = os.path.join(self.dir, "www", rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(text)
        self.port = free_port()
        self.access_path = os.path.join(self.dir, "access.log")
        self.conf_path = os.path.join(self.dir, "nginx.conf")
        # As root, workers would switch to nobody/www-data and could not read
        # the test's private (0700) directory: stay root.
        user = "user root;" if os.geteuid() == 0 else ""
        with open(self.conf_path, "w") as f:
            f.write(NGINX_CONF.format(user=user, dir=self.dir, port=self.port, echo=ECHO_BODY,
                                      log_format=LOG_FORMAT))
        self.argv = [nginx_binary(), "-p", self.dir + "/", "-c", self.conf_path,
                     "-g", "daemon off; pid %s/nginx.pid; error_log stderr;" % self.dir]
        self.proc = Proc(self.argv, os.path.join(self.dir, "nginx.out"))
        try:
            wait_port(self.port, proc=self.proc.p)
        except RuntimeError as e:
            out = self.proc.output()
            self.proc.stop()
            raise RuntimeError("%s\n%s" % (e, out))
        self._offset = 0
        self._lines = {}

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def _read_log(self):
        try:
            with open(self.access_path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        self._offset += end + 1
        for raw in data[:end].split(b"\n"):
            if not raw.strip():
                continue
            entry = json.loads(raw.decode("utf-8", "replace"))
            self._lines.setdefault(entry["id"], []).append(entry)

    def seen(self, case_id, wait=0.0):
        """The access-log entries of the requests that carried X-Case-Id:
        case_id; waits up to `wait` seconds for at least one."""
        deadline = time.time() + wait
        while True:
            self._read_log()
            if case_id in self._lines or time.time() >= deadline:
                return list(self._lines.get(case_id, []))
            time.sleep(0.005)

    def stop(self):
        self.proc.stop()


# Three OIDC clients on the one mock: tenant A's default provider, tenant B's,
# and the provider of tenant A's /agents route (redirect URIs on tenant A).
CLIENTS = [
    {"client_id": "ville-a-client", "client_secret": "secret-ville-a-0123456789",
     "id_token_signed_response_alg": "ES256", "host": HOST_A},
    {"client_id": "ville-b-client", "client_secret": "secret-ville-b-0123456789",
     "id_token_signed_response_alg": "RS256", "host": HOST_B},
    {"client_id": "ville-a-agents", "client_secret": "secret-ville-a-agents-0123",
     "id_token_signed_response_alg": "ES256", "host": HOST_A},
]


def clients_for(port):
    out = []
    for c in CLIENTS:
        d = {k: v for k, v in c.items() if k != "host"}
        d["redirect_uris"] = ["http://%s:%d/sesame/callback" % (c["host"], port)]
        d["post_logout_redirect_uris"] = ["http://%s:%d/sesame/logout/callback" % (c["host"], port)]
        out.append(d)
    return out


def gateway_conf(tmp, port, redis_port, mock, upstream):
    def secret(name, value):
        p = os.path.join(tmp, name)
        with open(p, "w") as f:
            f.write(value + "\n")
        os.chmod(p, 0o600)
        return p

    key = secret("session.key", "c2Vzc2lvbi1rZXktZm9yLXRlc3RzLW9ubHktMDEyMzQ1Njc4OQ==")
    sa, sb, sag = (secret("%s.secret" % c["client_id"], c["client_secret"]) for c in CLIENTS)
    return """
[server]
listen = 127.0.0.1:{port}
workers = 2
upstream_read_timeout = 3s
error_log = {tmp}/sesame-error.log
access_log = {tmp}/sesame-access.log
log_level = debug

[redis]
address = 127.0.0.1:{redis_port}
command_timeout = 500ms
connect_timeout = 500ms

[session]
secret_file = {key}

[provider franceconnect]
issuer = {issuer}
client_id = ville-a-client
client_secret_file = {sa}
ca_file = {ca}
http_timeout = 2s

[provider franceconnect-b]
issuer = {issuer}
client_id = ville-b-client
client_secret_file = {sb}
ca_file = {ca}
http_timeout = 2s

[provider agents]
issuer = {issuer}
client_id = ville-a-agents
client_secret_file = {sag}
ca_file = {ca}
http_timeout = 2s

[tenant ville-a]
display_name = Ville d'Arbre
hosts = {host_a}
public_url = http://{host_a}:{port}
provider = franceconnect

[tenant ville-b]
display_name = Ville de Bois
hosts = {host_b}
public_url = http://{host_b}:{port}
provider = franceconnect-b

[route a-static]
tenant = ville-a
path = /static
upstream = {up}
access = public

[route a-home]
tenant = ville-a
path = /
upstream = {up}
access = required

[route a-agents]
tenant = ville-a
path = /agents
upstream = {up}
access = required
provider = agents

[route b-static]
tenant = ville-b
path = /static
upstream = {up}
access = public

[route b-home]
tenant = ville-b
path = /
upstream = {up}
access = required
""".format(port=port, tmp=tmp, redis_port=redis_port, key=key, issuer=mock.issuer, ca=mock.ca_file,
           sa=sa, sb=sb, sag=sag, host_a=HOST_A, host_b=HOST_B, up=upstream)


# Routes as configured above: (tenant, prefix, access, providers accepted).
ROUTES = [
    ("ville-a", "/static", "public", ()),
    ("ville-a", "/agents", "required", ("agents",)),
    ("ville-a", "/", "required", ("franceconnect",)),
    ("ville-b", "/static", "public", ()),
    ("ville-b", "/", "required", ("franceconnect-b",)),
]
TENANT_OF_HOST = {HOST_A: "ville-a", HOST_B: "ville-b"}


class Session:
    """A signed-in session: its cookie and who it is."""

    def __init__(self, name, tenant, provider, host, cookies, account):
        self.name, self.tenant, self.provider, self.host = name, tenant, provider, host
        self.cookie = "; ".join("%s=%s" % kv for kv in cookies.items())
        self.account = account  # what the upstream gets as X-Sesame-Account


class CanonStack:
    """redis + mock FranceConnect + nginx + sesame, and three sessions:
    "a" (tenant A, franceconnect), "agents" (tenant A, agents provider, signed
    in on /agents) and "b" (tenant B, franceconnect-b). stop() ends all."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.port = free_port()
        self.procs = []
        try:
            self.redis = Redis(tmp)
            self.procs.append(self.redis)
            self.mock = harness.start_mockfc(os.path.join(tmp, "mock"), clients_for(self.port))
            self.procs.append(self.mock)
            self.nginx = Nginx(tmp)
            self.procs.append(self.nginx)
            self.gw = Sesame(tmp, gateway_conf(tmp, self.port, self.redis.port, self.mock,
                                               self.nginx.url), port=self.port)
            self.procs.append(self.gw)
            self.sessions = {
                "a": self._sign_in("a", "ville-a", "franceconnect", HOST_A, "/private/secret.html",
                                   "marie"),
                "agents": self._sign_in("agents", "ville-a", "agents", HOST_A, "/agents/secret.html",
                                        "jean"),
                "b": self._sign_in("b", "ville-b", "franceconnect-b", HOST_B, "/private/secret.html",
                                   "marie"),
            }
        except BaseException:
            self.stop()
            raise

    def _sign_in(self, name, tenant, provider, host, path, login):
        b = Browser(self.port)
        r, _ = sign_in(b, self.mock, self.port, login, path=path, host=host)
        assert r.status in (302, 303), (name, r.status, r.body[:500])
        jar = b.cookies.get(host, {})
        assert jar, "no session cookie after signing in (%s)" % name
        client = {"franceconnect": "ville-a-client", "franceconnect-b": "ville-b-client",
                  "agents": "ville-a-agents"}[provider]
        # no accounts plugin: the account is the provider's (pairwise) sub
        return Session(name, tenant, provider, host, jar, harness.expected_sub(client, login))

    def stop(self):
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception:  # noqa: BLE001
                pass
        self.procs = []


class Response:
    def __init__(self, status, headers, body, raw_head):
        self.status = status
        self.headers = headers        # list of (lower-case name, value)
        self.body = body
        self.raw_head = raw_head

    def header(self, name):
        for k, v in self.headers:
            if k == name.lower():
                return v
        return None

    @property
    def from_nginx(self):
        s = self.header("server")
        return s is not None and s.lower().startswith("nginx")

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")


def exchange(port, data, timeout=5.0):
    """Sends raw request bytes, reads ONE response (Content-Length, chunked or
    until close) and closes. Returns a Response, or None when the peer closed
    without answering."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
        if b"\r\n\r\n" not in buf:
            return None if not buf else Response(None, [], b"", buf)
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append((k.strip().lower(), v.strip()))
        hd = dict(headers)

        def more():
            try:
                c = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                return b""
            return c

        if "content-length" in hd:
            n = int(hd["content-length"])
            while len(rest) < n:
                c = more()
                if not c:
                    break
                rest += c
            body = rest[:n]
        elif hd.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                while b"\r\n" not in rest:
                    c = more()
                    if not c:
                        return Response(status, headers, body, head)
                    rest += c
                size_line, rest = rest.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                while len(rest) < size + 2:
                    c = more()
                    if not c:
                        break
                    rest += c
                body += rest[:size]
                rest = rest[size + 2:]
                if size == 0:
                    break
        else:
            body = rest
            while True:
                c = more()
                if not c:
                    break
                body += c
        return Response(status, headers, body, head)
    finally:
        s.close()
