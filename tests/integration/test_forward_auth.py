"""Forward-auth mode: a real nginx with auth_request in front of the echo
upstream, Sésame answering GET /sesame/auth (doc/forward-auth.md has the
same nginx snippet). The citizen's browser only ever talks to nginx."""

import json
import os
import socket

import pytest

import signin_env  # noqa: F401  (puts tests/mockfc on sys.path)
import harness  # noqa: E402
from nginx_env import nginx_binary  # noqa: E402
from sesame_env import Echo, Proc, Redis, Sesame, free_port, wait_port  # noqa: E402
from signin_env import Browser, clients_for, echoed, gateway_conf, sign_in  # noqa: E402

HOST = "ville-a.localhost"

NGINX_CONF = """
{user}
worker_processes 1;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;

    server {{
        listen 127.0.0.1:{port};
        server_name _;

        # --- the snippet of doc/forward-auth.md ---
        location /sesame/ {{
            proxy_pass http://{sesame};
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
        location = /_sesame_auth {{
            internal;
            proxy_pass http://{sesame}/sesame/auth?signin=401;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
        }}
        location @sesame_signin {{
            if ($sesame_redirect) {{
                return 302 $sesame_redirect;
            }}
            default_type application/json;
            return 401 '{{"status":401,"error":"sign-in required","signin":"$sesame_signin"}}';
        }}
        location / {{
            auth_request /_sesame_auth;
            auth_request_set $sesame_signin $upstream_http_x_sesame_signin;
            auth_request_set $sesame_redirect $upstream_http_x_sesame_redirect;
            auth_request_set $sesame_account $upstream_http_x_sesame_account;
            auth_request_set $sesame_acr $upstream_http_x_sesame_acr;
            auth_request_set $sesame_provider $upstream_http_x_sesame_provider;
            auth_request_set $sesame_given_name $upstream_http_x_sesame_given_name;
            auth_request_set $sesame_family_name $upstream_http_x_sesame_family_name;
            auth_request_set $sesame_birthdate $upstream_http_x_sesame_birthdate;
            error_page 401 = @sesame_signin;
            proxy_set_header X-Sesame-Account $sesame_account;
            proxy_set_header X-Sesame-Acr $sesame_acr;
            proxy_set_header X-Sesame-Provider $sesame_provider;
            proxy_set_header X-Sesame-Given-Name $sesame_given_name;
            proxy_set_header X-Sesame-Family-Name $sesame_family_name;
            proxy_set_header X-Sesame-Birthdate $sesame_birthdate;
            proxy_set_header Host $http_host;
            proxy_pass {upstream};
        }}
        # --- end of the snippet ---
    }}
}}
"""


class FwdStack:
    def __init__(self, tmp):
        self.procs = []
        self.port = free_port()          # nginx: what the citizen reaches
        self.sesame_port = free_port()
        self.redis = Redis(tmp)
        self.procs.append(self.redis)
        self.mock = harness.start_mockfc(tmp, clients_for(self.port))
        self.procs.append(self.mock)
        self.echo = Echo(tmp)
        self.procs.append(self.echo)
        text = gateway_conf(tmp, self.port, self.redis.port, self.mock, self.echo.url)
        text = text.replace("listen = 127.0.0.1:%d\n" % self.port,
                            "listen = 127.0.0.1:%d\ntrusted_proxies = 127.0.0.1\n" % self.sesame_port, 1)
        self.gw = Sesame(tmp, text, port=self.sesame_port)
        self.procs.append(self.gw)
        d = os.path.join(tmp, "nginx")
        for sub in ("tmp",):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(user="user root;" if os.geteuid() == 0 else "", dir=d,
                                      port=self.port, sesame="127.0.0.1:%d" % self.sesame_port,
                                      upstream=self.echo.url))
        self.nginx = Proc([nginx_binary(), "-p", d + "/", "-c", conf, "-g",
                           "daemon off; pid %s/nginx.pid; error_log stderr;" % d],
                          os.path.join(d, "nginx.out"))
        self.procs.append(self.nginx)
        wait_port(self.port, proc=self.nginx.p)

    def stop(self):
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception:  # noqa: BLE001
                pass


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = FwdStack(str(tmp_path_factory.mktemp("fwd")))
    yield s
    s.stop()


def url(stack, path):
    return "http://%s:%d%s" % (HOST, stack.port, path)


def test_sign_in_through_nginx_passes_identity(stack):
    b = Browser(stack.port)
    r = b.get(url(stack, "/demarches/etat-civil?x=1"))
    assert r.status == 302, (r.status, r.body[:300])
    loc = r.getheader("Location")
    assert loc.startswith("http://%s:%d/sesame/signin?return_to=" % (HOST, stack.port)), loc
    assert "etat-civil" in loc
    r, _ = sign_in(b, stack.mock, stack.port, "marie", path="/demarches/etat-civil?x=1")
    assert r.status in (302, 303), r.status
    assert r.getheader("Location").endswith("/demarches/etat-civil?x=1")
    r = b.get(url(stack, "/demarches/etat-civil?x=1"), headers={"X-Sesame-Account": "spoofed"})
    assert r.status == 200, r.body[:300]
    got = echoed(r.body)
    assert got["h"]["x-sesame-account"] == [harness.expected_sub("ville-a-client", "marie")]
    assert got["h"]["x-sesame-provider"] == ["franceconnect"]
    assert "x-sesame-given-name" in got["h"]
    # the acr step-up and the conditions of a route are Sésame's decision
    r = b.get(url(stack, "/fort"))
    assert r.status == 302 and "acr=eidas2" in r.getheader("Location")


def test_access_condition_refused(stack):
    b = Browser(stack.port)
    sign_in(b, stack.mock, stack.port, "lucie")
    r = b.get(url(stack, "/adultes"))
    assert r.status == 403
    b2 = Browser(stack.port)
    sign_in(b2, stack.mock, stack.port, "marie")
    assert b2.get(url(stack, "/adultes")).status == 200


def test_public_path_without_identity(stack):
    b = Browser(stack.port)
    r = b.get(url(stack, "/accueil"), headers={"X-Sesame-Account": "spoofed",
                                                 "X-Sesame-Given-Name": "Usurpateur"})
    assert r.status == 200, r.body[:300]
    got = echoed(r.body)
    assert not any(k.startswith("x-sesame-") for k in got["h"]), got["h"]


def test_xhr_gets_401_json_with_signin_url(stack):
    b = Browser(stack.port)
    r = b.get(url(stack, "/demarches"), headers={"Accept": "application/json",
                                                  "X-Requested-With": "XMLHttpRequest",
                                                  "Sec-Fetch-Mode": "cors"})
    assert r.status == 401
    j = json.loads(r.body)
    assert j["signin"].startswith("http://%s:%d/sesame/signin?return_to=" % (HOST, stack.port))


def direct(stack, headers, source="127.0.0.1", path="/sesame/auth"):
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", stack.sesame_port))
    h = "".join("%s: %s\r\n" % kv for kv in headers.items())
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n%s\r\n"
               % (path, HOST, stack.port, h)).encode())
    data = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        data += c
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head.decode("latin-1"), body


def test_only_trusted_proxies_may_ask(stack):
    st, _, _ = direct(stack, {"X-Original-URL": "/accueil"}, source="127.0.0.3")
    assert st == 403
    st, _, _ = direct(stack, {"X-Original-URL": "/accueil"})
    assert st == 200


def test_original_url_forms_and_canonical_path(stack):
    api = {"Accept": "application/json"}
    # X-Forwarded-Uri + X-Forwarded-Host (Traefik, Caddy)
    st, head, body = direct(stack, dict(api, **{"X-Forwarded-Uri": "/%64emarches",
                                                "X-Forwarded-Host": HOST,
                                                "X-Forwarded-Proto": "http"}))
    assert st == 401 and "x-sesame-signin:" in head.lower(), head
    assert "return_to=%2Fdemarches" in json.loads(body)["signin"]
    # a browser without ?signin=401: 302, as a proxied route answers
    st, head, _ = direct(stack, {"X-Original-URL": "http://%s:%d/demarches" % (HOST, stack.port)})
    assert st == 302 and "/sesame/signin?" in head
    # dot segments resolved before routing: /accueil/../demarches is /demarches
    st, _, _ = direct(stack, dict(api, **{"X-Original-URL": "/accueil/%2e%2e/demarches"}))
    assert st == 401
    for bad in ("/a%2Fb", "/..", "/a/%252e%252e/", "/%C0%AE", "demarches"):
        st, _, _ = direct(stack, dict(api, **{"X-Original-URL": bad}))
        assert st == 400, bad
    st, _, _ = direct(stack, api)  # neither header
    assert st == 400
    st, _, _ = direct(stack, dict(api, **{"X-Original-URL": "http://inconnu.localhost/demarches"}))
    assert st == 403
