"""Minimal data at rest and saying exactly what is shared, with real processes
(redis-server, the mock FranceConnect, the echo upstream, `sesame`):

- a Redis dump plus session.key decrypts no session: every key and value of
  Redis is read after real sign-ins and every value is tried with that key,
  under the former scheme (the secret itself) and under the per-cookie scheme
  with everything the dump holds in place of the cookie; with the cookie, the
  session opens (the derivation README "Sessions" documents);
- account plugins receive the identity claims the scopes ask for, never the
  protocol claims of the ID token;
- [tenant] session_cookie = browser: cookies without Max-Age or Expires, for
  the session cookie set by the callback and by the hop of another host name.
"""

import base64
import hashlib
import hmac
import html
import json
import os
import re
import socket
import urllib.parse

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import signin_env  # noqa: F401  (puts tests/mockfc on sys.path)
import harness  # noqa: E402
from sesame_env import Echo, Redis, Sesame, free_port  # noqa: E402
from signin_env import Stack, clients_for, sign_in  # noqa: E402

SESSION_KEY_TEXT = "c2Vzc2lvbi1rZXktZm9yLXRlc3RzLW9ubHktMDEyMzQ1Njc4OQ=="  # signin_env's session.key
RECORD_LABEL = b"sesame session v2"
PROTOCOL_CLAIMS = {"iss", "sub", "aud", "exp", "iat", "nbf", "nonce", "acr", "amr", "auth_time",
                   "azp", "at_hash", "c_hash", "sid", "jti"}


def identity(login):
    return [i for i in harness.load_identities() if i["login"] == login][0]


# ---------------------------------------------------------------- a Redis dump

class Resp:
    """A minimal, binary-safe Redis client (RESP2) for reading a dump."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.f = self.sock.makefile("rb")

    def close(self):
        self.f.close()
        self.sock.close()

    def call(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self.read()

    def read(self):
        line = self.f.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RuntimeError("unexpected reply %r" % line)


def dump(port):
    """{key name: [every byte string the key holds]} for every key of Redis."""
    r = Resp(port)
    try:
        keys, cursor = set(), b"0"
        while True:
            cursor, batch = r.call("SCAN", cursor, "COUNT", 1000)
            keys.update(batch)
            if cursor == b"0":
                break
        out = {}
        for k in keys:
            t = r.call("TYPE", k)
            if t == b"string":
                out[k] = [r.call("GET", k)]
            elif t == b"set":
                out[k] = r.call("SMEMBERS", k)
            elif t == b"hash":
                out[k] = r.call("HGETALL", k)
            elif t == b"list":
                out[k] = r.call("LRANGE", k, 0, -1)
            elif t == b"zset":
                out[k] = r.call("ZRANGE", k, 0, -1, "WITHSCORES")
            elif t != b"none":
                out[k] = [r.call("DUMP", k)]
        return out
    finally:
        r.close()


def server_secret():
    """The AES key Sésame derives from session.key (config.c derive_session_key)."""
    return hashlib.sha256(b"sesame session key v1\0" + SESSION_KEY_TEXT.encode()).digest()


def gcm_open(key, aad, value):
    """AES-256-GCM of version || key id || nonce (12) || ciphertext || tag; None if it fails."""
    if value is None or len(value) < 2 + 12 + 16:
        return None
    try:
        return AESGCM(key).decrypt(value[2:14], value[14:], aad)
    except InvalidTag:
        return None


def record_key(secret, raw):
    return hmac.new(secret, RECORD_LABEL + raw, hashlib.sha256).digest()


def keys_without_cookie(secret, name):
    """Every key someone holding the dump and session.key could try for the value at `name`:
    the secret (former scheme), and the per-cookie derivation fed with what the dump holds
    instead of the cookie (the hash in the key name, the key name itself, nothing)."""
    cands = [secret]
    m = re.search(rb":s:([0-9a-f]{64})$", name)
    if m:
        h = bytes.fromhex(m.group(1).decode())
        cands += [record_key(secret, h), h, hashlib.sha256(secret + h).digest()]
    cands += [record_key(secret, name), record_key(secret, b"")]
    return cands


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(str(tmp_path_factory.mktemp("privacy")))
    yield s
    s.stop()


def test_redis_dump_plus_session_key_decrypts_no_session(stack):
    # two citizens signed in, on two tenants, and a sign-in left half-way
    marie, jean = stack.browser(), stack.browser()
    r, _ = sign_in(marie, stack.mock, stack.port, "marie")
    assert r.status == 303, r.body[:300]
    r, _ = sign_in(jean, stack.mock, stack.port, "jean", path="/", host="ville-b.localhost")
    assert r.status in (302, 303), (r.status, r.body[:300])
    pending = stack.browser()
    r = pending.get("http://ville-a.localhost:%d/sesame/login?return_to=%%2Fdemarches" % stack.port)
    assert r.status == 302
    cookies = {"marie": marie.cookies["ville-a.localhost"]["sesame"],
               "jean": jean.cookies["ville-b.localhost"]["sesame"]}

    data = dump(stack.redis.port)
    secret = server_secret()
    sessions = {k: v for k, v in data.items() if re.match(rb"sesame:s:[0-9a-f]{64}$", k)}
    assert len(sessions) == 2, sorted(data)

    # no personal data in clear anywhere: not in a key name, not in a value
    everything = b"\n".join(list(data) + [v for vs in data.values() for v in vs if v])
    for login in ("marie", "jean"):
        ident = identity(login)
        for claim in ("given_name", "family_name", "birthdate", "email", "birthplace"):
            assert ident[claim].encode() not in everything, (login, claim)
    for c in cookies.values():
        assert c.encode() not in everything

    # with session.key: the pending sign-in opens (it is sealed under the secret alone, which
    # proves the key tried is the right one), no session does, under any key the dump allows
    opened = []
    for name, values in data.items():
        for v in values:
            for k in keys_without_cookie(secret, name):
                plain = gcm_open(k, name, v)
                if plain is not None:
                    opened.append((name, plain))
    assert opened, "session.key opened nothing at all: the test derives the wrong key"
    assert all(re.match(rb"sesame:l:[0-9a-f]{64}$", name) for name, _ in opened), \
        [name for name, _ in opened]
    for _, plain in opened:  # pending sign-ins hold no personal data
        for login in ("marie", "jean"):
            assert identity(login)["family_name"].encode() not in plain
    assert not any(name in sessions for name, _ in opened)

    # with the cookie as well: the session opens (the documented derivation), and only its own
    for login, cookie in cookies.items():
        raw = b64url_decode(cookie)
        name = b"sesame:s:" + hashlib.sha256(raw).hexdigest().encode()
        assert name in sessions
        plain = gcm_open(record_key(secret, raw), name, sessions[name][0])
        assert plain is not None, login
        assert identity(login)["family_name"].encode() in plain
        assert sessions[name][0][0] == 2  # record format version
        others = [n for n in sessions if n != name]
        assert all(gcm_open(record_key(secret, raw), n, sessions[n][0]) is None for n in others)

    # and Sésame itself still reads them: the sessions work, logout ends one at once
    r = marie.get("http://ville-a.localhost:%d/demarches" % stack.port)
    assert r.status == 200
    r = marie.get("http://ville-a.localhost:%d/sesame/logout" % stack.port)
    assert r.status == 200
    token = re.search(r'name="csrf" value="([^"]+)"', r.body.decode()).group(1)
    r = marie.request("POST", "http://ville-a.localhost:%d/sesame/logout" % stack.port,
                      body="csrf=" + token,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status in (200, 302, 303), (r.status, r.body[:300])
    gone = b"sesame:s:" + hashlib.sha256(b64url_decode(cookies["marie"])).hexdigest().encode()
    assert gone not in dump(stack.redis.port)


# ---------------------------------------------------------------- the sign-in page

def test_sign_in_page_says_what_is_shared(stack):
    """ville-a's provider asks for more (gender, birthplace, birthcountry, email, nom d'usage)
    than its routes release (given_name family_name birthdate): the page says both."""
    b = stack.browser()
    r = b.get("http://ville-a.localhost:%d/sesame/signin?return_to=%%2Fdemarches" % stack.port)
    assert r.status == 200
    text = html.unescape(r.body.decode())
    lists = re.findall(r"<p>([^<]*)</p>\s*<ul class=\"claims\">(.*?)</ul>", text, re.S)
    got = [(p.replace("\xa0", " "), re.findall(r"<li>(.*?)</li>", items)) for p, items in lists]
    assert got == [
        ("Si vous vous identifiez avec FranceConnect, Ville d'Arbre reçoit :",
         ["vos prénoms", "votre nom de naissance", "votre date de naissance", "votre sexe",
          "votre commune de naissance", "votre pays de naissance", "votre adresse e-mail",
          "votre nom d'usage (par exemple le nom d'époux ou d'épouse)",
          "un numéro de connexion, propre à ce service, qui ne dit rien de vous"]),
        ("Ses services en ligne reçoivent seulement :",
         ["vos prénoms", "votre nom de naissance", "votre date de naissance"]),
    ], got


# ---------------------------------------------------------------- what plugins receive

class PluginStack(Stack):
    """signin_env's stack with ville-a's accounts resolved by the http plugin against
    hmac_server.py (TLS, a certificate of the mock's CA), whose log is what it received."""

    def __init__(self, tmp):
        import accounts_env
        import pki

        self.tmp = tmp
        self.port = free_port()
        self.redis = self.mock = self.echo = self.grc = self.gw = None
        try:
            self.redis = Redis(tmp)
            self.mock = harness.start_mockfc(tmp, clients_for(self.port))
            self.echo = Echo(tmp)
            cert, key = pki.issue_cert(self.mock.pki_dir, "grc", ["127.0.0.1"])
            secret = accounts_env.write_secret(os.path.join(tmp, "grc.secret"),
                                               harness.random_token(32))
            self.grc = accounts_env.HmacServer(tmp, cert, key, secret)
            self.conf_kw = {"accounts": "[accounts grc]\nplugin = http\nurl = %s\n"
                                        "secret_file = %s\nca_file = %s\ntimeout = 2s\n"
                                        % (self.grc.url, secret, self.mock.ca_file)}
            self.gw = Sesame(tmp, self.conf_text(), port=self.port)
        except BaseException:
            self.stop()
            raise

    def conf_text(self, port=None, **kw):
        text = super().conf_text(port, **kw)
        marker = "provider = franceconnect\n\n[tenant ville-b]"
        assert marker in text
        return text.replace(marker, "provider = franceconnect\naccounts = grc\n\n[tenant ville-b]")

    def stop(self):
        for p in (self.gw, self.grc, self.echo, self.mock, self.redis):
            if p is not None:
                try:
                    p.stop()
                except Exception:  # noqa: BLE001
                    pass


def test_plugin_receives_identity_claims_only(tmp_path_factory):
    s = PluginStack(str(tmp_path_factory.mktemp("plugin-claims")))
    try:
        b = s.browser()
        r, _ = sign_in(b, s.mock, s.port, "jean")
        assert r.status == 303, (r.status, r.body[:300])
        entries = s.grc.entries()
        assert len(entries) == 1 and entries[0]["verified"], entries
        body = entries[0]["body"]
        claims = body["claims"]
        # the scopes of ville-a's provider (signin_env.gateway_conf)
        asked = {"given_name", "family_name", "birthdate", "gender", "birthplace", "birthcountry",
                 "email", "preferred_username"}
        assert not PROTOCOL_CLAIMS & set(claims), sorted(claims)
        assert set(claims) <= asked, sorted(set(claims) - asked)
        ident = identity("jean")
        for c in sorted(asked):
            assert claims.get(c) == ident[c], (c, claims.get(c))
        assert body["sub"] == harness.expected_sub("ville-a-client", "jean")
        # the account it answered is the session's
        h = json.loads(b.get("http://ville-a.localhost:%d/demarches" % s.port).body)["headers"]
        assert ["X-Sesame-Account", "crm-" + body["sub"][:16]] in h, h
    finally:
        s.stop()


# ---------------------------------------------------------------- shared computers

class BrowserCookieStack(Stack):
    """signin_env's stack with `session_cookie = browser` on ville-a (ville-b keeps the
    default)."""

    def conf_text(self, port=None, **kw):
        text = super().conf_text(port, **kw)
        marker = "provider = franceconnect\n\n[tenant ville-b]"
        assert marker in text
        return text.replace(marker, "provider = franceconnect\nsession_cookie = browser\n\n"
                                     "[tenant ville-b]")


def set_cookies(r, name):
    return [v for k, v in r.getheaders()
            if k.lower() == "set-cookie" and v.split("=", 1)[0].strip() == name]


def navigate(stack, b, url, login, log):
    """Follows redirects, the sign-in page's first provider link and the mock's authorize
    step; appends (host, Set-Cookie value) of every gateway response to log."""
    for _ in range(25):
        if url.startswith(stack.mock.issuer):
            stack.mock.autologin(login)
            a = harness.http_request(url, ssl_context=stack.mock.ssl_context())
            assert a.status in (302, 303), a.status
            url = a.header("Location")
            continue
        u = urllib.parse.urlsplit(url)
        r = b.get(url)
        log += [(u.hostname, v) for k, v in r.getheaders() if k.lower() == "set-cookie"]
        if r.status in (301, 302, 303, 307):
            url = urllib.parse.urljoin(url, r.getheader("Location"))
            continue
        if r.status == 200 and u.path == "/sesame/signin":
            link = re.search(r'href="([^"]*/sesame/login\?[^"]*)"', html.unescape(r.body.decode()))
            url = urllib.parse.urljoin(url, link.group(1))
            continue
        return r
    raise AssertionError("too many steps")


def test_session_cookie_browser_ends_with_the_browser(tmp_path_factory):
    s = BrowserCookieStack(str(tmp_path_factory.mktemp("browser-cookie")))
    try:
        # the sign-in host: the binding cookie and the session cookie have no lifetime
        b = s.browser()
        log = []
        r = navigate(s, b, "http://ville-a.localhost:%d/demarches" % s.port, "marie", log)
        assert r.status == 200, (r.status, r.body[:300])
        sesame = [v for h, v in log if h == "ville-a.localhost" and v.startswith("sesame=")]
        assert sesame, log
        for h, v in log:
            if "Max-Age=0" in v:  # deletions keep Max-Age=0
                continue
            assert "max-age" not in v.lower() and "expires" not in v.lower(), v
            assert "HttpOnly" in v and "SameSite=Lax" in v and "Path=/" in v, v
        assert sesame[-1] == "sesame=%s; Path=/; HttpOnly; SameSite=Lax" % \
            b.cookies["ville-a.localhost"]["sesame"]

        # another host name of the tenant: its hop cookie and the session cookie the hop sets
        log = []
        r = navigate(s, b, "http://www.ville-a.localhost:%d/demarches" % s.port, "marie", log)
        assert r.status == 200, (r.status, r.body[:300])
        www = [v for h, v in log if h == "www.ville-a.localhost" and "Max-Age=0" not in v]
        assert any(v.startswith("sesame=") for v in www), log
        assert any(v.startswith("sesame_hop=") for v in www), log
        for v in www:
            assert "max-age" not in v.lower() and "expires" not in v.lower(), v

        # the default (ville-b): persistent, Max-Age = max_lifetime
        b2 = s.browser()
        log = []
        navigate(s, b2, "http://ville-b.localhost:%d/" % s.port, "jean", log)
        sesame = [v for h, v in log if v.startswith("sesame=") and "Max-Age=0" not in v]
        assert sesame and all("Max-Age=43200" in v for v in sesame), log

        # logout still deletes the browser-lifetime cookie
        r = b.get("http://ville-a.localhost:%d/sesame/logout" % s.port)
        token = re.search(r'name="csrf" value="([^"]+)"', r.body.decode()).group(1)
        r = b.request("POST", "http://ville-a.localhost:%d/sesame/logout" % s.port,
                      body="csrf=" + token,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert any("Max-Age=0" in v for v in set_cookies(r, "sesame")), r.getheaders()
    finally:
        s.stop()
