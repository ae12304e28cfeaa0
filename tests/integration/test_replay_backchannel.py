"""Nothing lost on re-login (gate/replay.h) and OpenID Connect Back-Channel
Logout (gate/backchannel.h): two instances on one Redis, the mock
FranceConnect, the echo upstream. Everything on 127.0.0.1."""

import hashlib
import html
import http.client
import json
import re
import urllib.parse

import pytest

from sessions_env import HOST, XHR, Base, Gateway, Redis, get, redis_cli, redis_section, session_key
from signin_env import echoed

FORM = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    b = Base(str(tmp_path_factory.mktemp("replay")), nports=2)
    yield b
    b.stop()


@pytest.fixture(scope="module")
def pair(base):
    redis = Redis(base.tmp)
    text = redis_section(address="127.0.0.1:%d" % redis.port)
    a = Gateway(base, "a", text, "cache_ttl = 5s")
    b = Gateway(base, "b", text, "cache_ttl = 5s")
    yield redis, a, b
    for p in (a, b, redis):
        p.stop()


def echo_log(base):
    c = http.client.HTTPConnection("127.0.0.1", base.echo.port, timeout=5)
    c.request("GET", "/__log")
    data = json.loads(c.getresponse().read())
    c.close()
    return data


def post(browser, gw, path, body, ctype=FORM, headers=None):
    h = {"Content-Type": ctype}
    h.update(headers or {})
    return browser.request("POST", gw.url(path), body=body, headers=h)


def sign_in_again(browser, base, gw, location, login):
    """From a 303 to the sign-in page: the provider, then back; returns the
    final redirect of the callback."""
    page = browser.get(location)
    assert page.status == 200, page.status
    m = re.search(r'href="([^"]*/sesame/login\?[^"]*)"', html.unescape(page.body.decode()))
    r = browser.get(urllib.parse.urljoin(gw.url("/"), m.group(1)))
    assert r.status == 302
    base.mock.autologin(login)
    import harness
    a = harness.http_request(r.getheader("Location"), ssl_context=base.mock.ssl_context())
    r = browser.get(a.header("Location"))
    assert r.status == 303, (r.status, r.body[:300])
    return r


# ---- POST preservation

def test_form_kept_and_sent_once(pair, base):
    redis, a, _ = pair
    browser, cookie = a.sign_in("marie")
    # the session ends while the form is being filled (deleted, and the
    # instances' caches told, as a revocation does)
    key = session_key(cookie)
    redis_cli(redis.port, "DEL", key)
    redis_cli(redis.port, "PUBLISH", "sesame:revoked", key.rsplit(":", 1)[1])
    body = "nom=Dupont&commentaire=" + urllib.parse.quote("déjà écrit, très long") + "&n=1"
    r = post(browser, a, "/demarches/formulaire?etape=2", body.encode())
    assert r.status == 303, (r.status, r.body[:300])
    loc = r.getheader("Location")
    assert "/sesame/signin?" in loc and "return_to=%2Fsesame%2Fresume%3Fid%3D" in loc, loc
    assert "sesame_kept" in browser.cookies[HOST]
    before = len(echo_log(base))
    r = sign_in_again(browser, base, a, loc, "marie")
    resume = r.getheader("Location")
    assert resume.startswith("/sesame/resume?id="), resume
    page = browser.get(a.url(resume))
    assert page.status == 200
    text = html.unescape(page.body.decode())
    assert "Votre saisie a été conservée" in text
    rid = re.search(r'name="id" value="([^"]+)"', text).group(1)
    # nothing sent upstream yet
    assert len(echo_log(base)) == before
    r = post(browser, a, "/sesame/resume", ("id=" + rid).encode())
    assert r.status == 200, (r.status, r.body[:300])
    e = echoed(r.body)
    assert e["method"] == "POST" and e["path"] == "/demarches/formulaire?etape=2"
    assert e["body_text"] == body
    hdrs = {k.lower(): v for k, v in e["h"].items()} if "h" in e else {}
    assert hdrs.get("content-type") == [FORM]
    assert "x-sesame-family-name" in hdrs
    # exactly once: a second resend finds nothing
    r2 = post(browser, a, "/sesame/resume", ("id=" + rid).encode())
    assert r2.status == 400
    posts = [x for x in echo_log(base)[before:] if x["method"] == "POST"]
    assert len(posts) == 1
    assert posts[0]["body_sha256"] == hashlib.sha256(body.encode()).hexdigest()


def test_multipart_kept_byte_for_byte(pair, base):
    _, a, _ = pair
    browser = a.browser()
    boundary = "----sesameBoundary7MA4YWxkTrZu0gW"
    payload = ("--%s\r\nContent-Disposition: form-data; name=\"piece\"; filename=\"a.bin\"\r\n"
               "Content-Type: application/octet-stream\r\n\r\n" % boundary).encode() + \
        bytes(range(256)) + ("\r\n--%s--\r\n" % boundary).encode()
    ctype = "multipart/form-data; boundary=" + boundary
    r = post(browser, a, "/demarches/piece", payload, ctype=ctype)
    assert r.status == 303
    r = sign_in_again(browser, base, a, r.getheader("Location"), "lucie")
    rid = r.getheader("Location").split("id=", 1)[1]
    r = post(browser, a, "/sesame/resume", ("id=" + rid).encode())
    assert r.status == 200
    e = echoed(r.body)
    assert e["body_len"] == len(payload)
    assert e["body_sha256"] == hashlib.sha256(payload).hexdigest()


def test_other_browser_cannot_resend(pair, base):
    _, a, _ = pair
    browser = a.browser()
    r = post(browser, a, "/demarches/x", b"a=1")
    assert r.status == 303
    r = sign_in_again(browser, base, a, r.getheader("Location"), "marie")
    rid = r.getheader("Location").split("id=", 1)[1]
    thief, _ = a.sign_in("lucie")
    assert post(thief, a, "/sesame/resume", ("id=" + rid).encode()).status == 400
    assert thief.get(a.url("/sesame/resume?id=" + rid)).status == 400
    # still there for its own browser
    assert post(browser, a, "/sesame/resume", ("id=" + rid).encode()).status == 200


def test_xhr_and_large_forms(pair, base):
    _, a, _ = pair
    browser = a.browser()
    r = post(browser, a, "/demarches/x", b"a=1", headers=XHR)
    assert r.status == 401
    big = b"a=" + b"x" * (1024 * 1024 + 10)
    r = post(browser, a, "/demarches/x", big)
    assert r.status == 413
    text = html.unescape(r.body.decode())
    assert "trop volumineux pour être conservé" in text
    # a JSON POST is not a form: the usual redirect
    r = post(browser, a, "/demarches/x", b"{}", ctype="application/json")
    assert r.status == 302


# ---- back-channel logout

def bcl_uri(gw):
    return gw.url("/sesame/backchannel-logout")


def post_token(gw, token):
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    c.request("POST", "/sesame/backchannel-logout",
              body=urllib.parse.urlencode({"logout_token": token}),
              headers={"Host": "%s:%d" % (HOST, gw.port), "Content-Type": FORM})
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


def signed_in(gw, cookie):
    return get(gw.port, "/demarches", cookie).status == 200


def test_backchannel_logout_two_instances(pair, base):
    _, a, b = pair
    _, ca = a.sign_in("alex")
    _, cb = b.sign_in("alex")
    _, other = a.sign_in("marie")
    assert signed_in(a, ca) and signed_in(b, cb) and signed_in(b, ca)
    out = base.mock.backchannel(client_id="ville-a-client", login="alex", uri=bcl_uri(a))
    assert out["status"] == 200, out
    assert not signed_in(a, ca) and not signed_in(b, ca)
    assert not signed_in(a, cb) and not signed_in(b, cb)
    assert signed_in(b, other)
    # replayed (same jti), on either instance
    assert post_token(b, out["token"]) == 400
    assert post_token(a, out["token"]) == 400
    assert "jti already used" in a.errors() + b.errors()


@pytest.mark.parametrize("knob,why", [({"unsigned": True}, ""), ({"nonce": True}, "nonce present"),
                                      ({"no_events": True}, "events")])
def test_backchannel_refused(pair, base, knob, why):
    _, a, b = pair
    _, cookie = a.sign_in("lucie")
    out = base.mock.backchannel(client_id="ville-a-client", login="lucie", uri=bcl_uri(b), **knob)
    assert out["status"] == 400, out
    assert signed_in(a, cookie) and signed_in(b, cookie)
    if why:
        assert why in b.errors()


def test_backchannel_other_client_refused(pair, base):
    _, a, _ = pair
    _, cookie = a.sign_in("lucie")
    # a token for ville-b's client, sent to ville-a's host: no provider of
    # that tenant has that audience
    out = base.mock.backchannel(client_id="ville-b-client", login="lucie", uri=bcl_uri(a))
    assert out["status"] == 400
    assert signed_in(a, cookie)


# ---- front-channel logout

def frontchannel(gw, query):
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    c.request("GET", "/sesame/frontchannel-logout" + query, headers={"Host": "%s:%d" % (HOST, gw.port)})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r, body


def mock_sid(client_id, login):
    """What the mock puts in the ID tokens' sid (mockfc.sid_for)."""
    return hashlib.sha256(("sid:" + client_id + ":" + login).encode("utf-8")).hexdigest()[:32]


def test_frontchannel_logout_ends_the_provider_session_everywhere(pair, base):
    _, a, b = pair
    _, ca = a.sign_in("jean")
    _, cb = b.sign_in("jean")
    _, other = a.sign_in("marie")
    assert signed_in(a, ca) and signed_in(b, cb) and signed_in(b, other)
    q = "?" + urllib.parse.urlencode({"iss": base.mock.issuer, "sid": mock_sid("ville-a-client", "jean")})
    r, body = frontchannel(b, q)
    assert r.status == 200, body
    csp = r.getheader("Content-Security-Policy")
    origin = re.match(r"https://[^/]+", base.mock.issuer).group(0)
    assert "frame-ancestors %s" % origin in csp, csp
    assert r.getheader("Cache-Control") == "no-store"
    assert r.getheader("X-Frame-Options") is None
    assert 'lang="fr"' in body.decode()
    # both of jean's sessions, on both instances; marie's stays
    assert not signed_in(a, ca) and not signed_in(b, ca)
    assert not signed_in(a, cb) and not signed_in(b, cb)
    assert signed_in(a, other) and signed_in(b, other)


@pytest.mark.parametrize("query", [
    "",
    "?sid=abc",
    "?iss=https%3A%2F%2Fother.example",
    "?iss=https%3A%2F%2Fother.example&sid=abc",
    "?iss=X&sid=a&sid=b",
])
def test_frontchannel_logout_refused(pair, base, query):
    _, a, _ = pair
    _, cookie = a.sign_in("lucie")
    if query == "?sid=abc":
        query = "?" + urllib.parse.urlencode({"sid": mock_sid("ville-a-client", "lucie")})
    r, _ = frontchannel(a, query)
    assert r.status == 400
    assert signed_in(a, cookie)
