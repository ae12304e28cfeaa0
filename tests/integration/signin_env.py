"""A full stack for sign-in tests: redis-server, the mock FranceConnect
(HTTPS, its own test CA), the echo upstream and `sesame`, all real processes
on loopback, plus a tiny browser (cookie jar, no redirects followed)."""

import html
import http.client
import json
import os
import re
import sys
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "mockfc"))

import harness  # noqa: E402
from sesame_env import Echo, Redis, Sesame, free_port  # noqa: E402

CLIENTS = [
    {"client_id": "ville-a-client", "client_secret": "secret-ville-a-0123456789",
     "id_token_signed_response_alg": "ES256"},
    {"client_id": "ville-b-client", "client_secret": "secret-ville-b-0123456789",
     "id_token_signed_response_alg": "RS256"},
]


def gateway_conf(tmp, port, redis_port, mock, echo_url, extra_session="", extra_routes="",
                 accounts=""):
    def secret(name, value):
        p = os.path.join(tmp, name)
        with open(p, "w") as f:
            f.write(value + "\n")
        os.chmod(p, 0o600)
        return p

    key = secret("session.key", "c2Vzc2lvbi1rZXktZm9yLXRlc3RzLW9ubHktMDEyMzQ1Njc4OQ==")
    sa = secret("a.secret", CLIENTS[0]["client_secret"])
    sb = secret("b.secret", CLIENTS[1]["client_secret"])
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
{extra_session}

[provider franceconnect]
issuer = {issuer}
client_id = ville-a-client
client_secret_file = {sa}
ca_file = {ca}
scopes = openid given_name family_name birthdate gender birthplace birthcountry email preferred_username
http_timeout = 2s
jwks_refetch_interval = 1s

[provider franceconnect-b]
issuer = {issuer}
client_id = ville-b-client
client_secret_file = {sb}
ca_file = {ca}
scopes = openid given_name family_name birthdate

{accounts}

[tenant ville-a]
display_name = Ville d'Arbre
hosts = ville-a.localhost www.ville-a.localhost
public_url = http://ville-a.localhost:{port}
provider = franceconnect

[tenant ville-b]
display_name = Ville de Bois
hosts = ville-b.localhost
public_url = http://ville-b.localhost:{port}
provider = franceconnect-b

[route a-home]
tenant = ville-a
path = /
upstream = {echo}
access = public

[route a-demarches]
tenant = ville-a
path = /demarches
upstream = {echo}
claims = given_name family_name birthdate

[route a-cantine]
tenant = ville-a
path = /cantine
upstream = {echo}
claims = given_name

[route a-optionnel]
tenant = ville-a
path = /optionnel
upstream = {echo}
access = optional

[route a-adultes]
tenant = ville-a
path = /adultes
upstream = {echo}
require = age >= 18
deny_message = Ce service est réservé aux personnes majeures.

[route a-fort]
tenant = ville-a
path = /fort
upstream = {echo}
acr = eidas2

[route b-home]
tenant = ville-b
path = /
upstream = {echo}
claims = family_name
{extra_routes}
""".format(port=port, tmp=tmp, redis_port=redis_port, key=key, issuer=mock.issuer, sa=sa, sb=sb,
           ca=mock.ca_file, echo=echo_url, extra_session=extra_session, extra_routes=extra_routes,
           accounts=accounts)


class Browser:
    """Cookies per host name, no redirect followed, HTML navigations."""

    def __init__(self, port):
        self.port = port
        self.cookies = {}  # host -> {name: value}

    def request(self, method, url, body=None, headers=None, host=None):
        u = urllib.parse.urlsplit(url)
        if u.scheme == "https":
            raise ValueError("use the mock for https URLs")
        hostname = u.hostname or host
        path = (u.path or "/") + ("?" + u.query if u.query else "")
        h = {"Host": "%s:%d" % (hostname, self.port), "Accept": "text/html,application/xhtml+xml",
             "Sec-Fetch-Mode": "navigate"}
        jar = self.cookies.get(hostname, {})
        if jar:
            h["Cookie"] = "; ".join("%s=%s" % kv for kv in jar.items())
        h.update(headers or {})
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        for name, value in r.getheaders():
            if name.lower() == "set-cookie":
                nv = value.split(";", 1)[0]
                n, _, v = nv.partition("=")
                if "Max-Age=0" in value or v == "":
                    self.cookies.setdefault(hostname, {}).pop(n, None)
                else:
                    self.cookies.setdefault(hostname, {})[n] = v
        r.body = data
        return r

    def get(self, url, **kw):
        return self.request("GET", url, **kw)


def sign_in(browser, mock, port, login, path="/demarches", host="ville-a.localhost"):
    """Runs the whole flow; returns the final response on `path`."""
    base = "http://%s:%d" % (host, port)
    r = browser.get(base + path)
    assert r.status == 302, (r.status, r.body[:300])
    loc = r.getheader("Location")
    assert "/sesame/signin?" in loc or "/sesame/login?" in loc, loc
    if "/sesame/signin?" in loc:
        page = browser.get(loc)
        assert page.status == 200
        text = html.unescape(page.body.decode())
        m = re.search(r'href="([^"]*/sesame/login\?[^"]*)"', text)
        assert m, text[:2000]
        loc = urllib.parse.urljoin(base, m.group(1))
    r = browser.get(loc)
    assert r.status == 302, (r.status, r.body[:500])
    authorize = r.getheader("Location")
    assert authorize.startswith(mock.issuer + "/authorize?"), authorize
    mock.autologin(login)
    a = harness.http_request(authorize, ssl_context=mock.ssl_context())
    assert a.status in (302, 303), (a.status, a.body[:300])
    callback = a.header("Location")
    r = browser.get(callback)
    return r, callback


class Stack:
    """redis + mock FranceConnect + echo upstream + sesame; stop() ends all."""

    def __init__(self, tmp, **conf_kw):
        self.tmp = tmp
        self.port = free_port()
        self.redis = Redis(tmp)
        self.mock = harness.start_mockfc(tmp, clients_for(self.port))
        self.echo = Echo(tmp)
        self.conf_kw = conf_kw
        self.gw = Sesame(tmp, self.conf_text(), port=self.port)

    def conf_text(self, port=None, **kw):
        args = dict(self.conf_kw)
        args.update(kw)
        return gateway_conf(self.tmp, port or self.port, self.redis.port, self.mock, self.echo.url,
                            **args)

    def browser(self):
        return Browser(self.port)

    def stop(self):
        for p in (self.gw, self.echo, self.mock, self.redis):
            try:
                p.stop()
            except Exception:  # noqa: BLE001
                pass


def clients_for(port):
    out = []
    for c, host in zip(CLIENTS, ["ville-a.localhost", "ville-b.localhost"]):
        d = dict(c)
        d["redirect_uris"] = ["http://%s:%d/sesame/callback" % (host, port)]
        d["post_logout_redirect_uris"] = ["http://%s:%d/sesame/logout/callback" % (host, port)]
        out.append(d)
    return out


def echoed(body):
    j = json.loads(body)
    j["h"] = {}
    for k, v in j["headers"]:
        j["h"].setdefault(k.lower(), []).append(v)
    return j
