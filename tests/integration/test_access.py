"""Who may open a route: routes bound to providers, stepping up from eidas1 to eidas2 through
the sign-in page, the callback bound to the browser that started the sign-in, one tenant on
several host names without a shared cookie domain (one sign-in, one-time hop tickets between
the hosts), and the load-time check of cookie_domain.

Real processes on loopback: one redis-server, one mock FranceConnect in mode "fc-stepup" (it
also grants eidas2 when acr_values asks for it, as FranceConnect+ would), one echo upstream, and
one `sesame` per scenario (each its own port, Redis prefix and tenant), so that a configuration
key a binary does not know yet fails only the tests of its own scenario. Everything started is
stopped at teardown.
"""

import base64
import html
import json
import os
import re
import urllib.parse

import pytest

import signin_env  # noqa: F401  (puts tests/mockfc on sys.path)
import harness  # noqa: E402
from sesame_env import Echo, Redis, Sesame, check_config, free_port, wait_port  # noqa: E402
from signin_env import Browser, echoed  # noqa: E402

REDIRECTS = (301, 302, 303, 307, 308)
SESSION_KEY = base64.b64encode(b"access-tests-session-key-0123456789-abcdef").decode()
XHR = {"X-Requested-With": "XMLHttpRequest", "Accept": "*/*", "Sec-Fetch-Mode": "cors"}
JSON_API = {"Accept": "application/json", "Sec-Fetch-Mode": "cors"}

# the multi-host tenant: the provider knows only the first host's callback
T_HOSTS = ["ville-t.localhost", "www.ville-t.localhost", "demarches.ville-t.localhost"]


# ---------------------------------------------------------------- processes

class Infra:
    """redis + mock FranceConnect (fc-stepup) + echo upstream, and the gateways' ports and
    registrations, all known before the mock starts (the mock reads its clients at start)."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []
        self.ports = {"p": free_port(), "s": free_port(), "t": free_port()}
        self.clients = {}   # client_id -> client dict
        self.secrets = {}   # client_id -> path of the secret file
        self._register("ville-p-fc", "ville-p.localhost", self.ports["p"])
        self._register("ville-p-agents", "ville-p.localhost", self.ports["p"])
        self._register("ville-s-fc", "ville-s.localhost", self.ports["s"])
        self._register("ville-t-fc", T_HOSTS[0], self.ports["t"])
        self.key = self._secret("session.key", SESSION_KEY)
        try:
            self.redis = Redis(tmp)
            self.procs.append(self.redis)
            self.echo = Echo(tmp)
            self.procs.append(self.echo)
            self.mock = harness.start_mockfc(os.path.join(tmp, "mock"), list(self.clients.values()),
                                             mode="fc-stepup")
            self.procs.append(self.mock)
        except BaseException:
            self.stop()
            raise

    def _secret(self, name, value):
        p = os.path.join(self.tmp, name)
        with open(p, "w") as f:
            f.write(value + "\n")
        os.chmod(p, 0o600)
        return p

    def _register(self, client_id, host, port):
        secret = "secret-%s-0123456789abcdef" % client_id
        self.secrets[client_id] = self._secret(client_id + ".secret", secret)
        base = "http://%s:%d/sesame" % (host, port)
        self.clients[client_id] = {"client_id": client_id, "client_secret": secret,
                                   "redirect_uris": [base + "/callback"],
                                   "post_logout_redirect_uris": [base + "/logout/callback"],
                                   "id_token_signed_response_alg": "ES256"}

    def provider(self, name, client_id):
        return """
[provider {name}]
issuer = {issuer}
client_id = {cid}
client_secret_file = {secret}
ca_file = {ca}
scopes = openid given_name family_name birthdate
http_timeout = 2s
""".format(name=name, issuer=self.mock.issuer, cid=client_id, secret=self.secrets[client_id],
           ca=self.mock.ca_file)

    def conf(self, name, port, body):
        return """
[server]
listen = 127.0.0.1:{port}
workers = 2
upstream_read_timeout = 3s
error_log = {tmp}/{name}-error.log
access_log = {tmp}/{name}-access.log
log_level = debug

[redis]
address = 127.0.0.1:{redis}
prefix = {name}:
command_timeout = 500ms
connect_timeout = 500ms

[session]
secret_file = {key}
{body}""".format(port=port, tmp=self.tmp, name=name, redis=self.redis.port, key=self.key,
                 body=body)

    def stop(self):
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception:  # noqa: BLE001  (stop the others whatever happens)
                pass
        self.procs = []


class Gateway:
    """One `sesame` for one scenario: its port, the tenant's host names (the first is the
    public_url's), and which mock client each of its providers uses."""

    def __init__(self, infra, name, port, hosts, providers, body):
        self.infra, self.name, self.port, self.hosts = infra, name, port, list(hosts)
        self.providers = dict(providers)  # provider name -> client_id
        self.gw = Sesame(infra.tmp, infra.conf(name, port, body), name=name, port=port, wait=False)
        try:
            wait_port(port, timeout=15, proc=self.gw.proc.p)
        except Exception as exc:  # noqa: BLE001
            out = self.gw.proc.output()[-3000:] + self.gw.errors()[-3000:]
            self.stop()
            pytest.fail("sesame (%s) did not start: %s\n%s" % (name, exc, out), pytrace=False)

    def url(self, path, host=None):
        return "http://%s:%d%s" % (host or self.hosts[0], self.port, path)

    def browser(self):
        return Browser(self.port)

    def stop(self):
        self.gw.stop()


@pytest.fixture(scope="module")
def infra(tmp_path_factory):
    i = Infra(str(tmp_path_factory.mktemp("access")))
    yield i
    i.stop()


@pytest.fixture(autouse=True)
def clean_mock(infra):
    infra.mock.scenario("none")
    infra.mock.autologin(None)
    yield
    infra.mock.scenario("none")
    infra.mock.autologin(None)


def routes(tenant, echo, specs):
    """[route] sections: specs is a list of (name, path, extra key = value lines)."""
    out = []
    for name, path, extra in specs:
        out.append("[route %s]\ntenant = %s\npath = %s\nupstream = %s\n%s\n"
                   % (name, tenant, path, echo, extra))
    return "\n".join(out)


@pytest.fixture(scope="module")
def gw_p(infra):
    """ville-p: two providers on the same mock (two registrations), routes bound to each."""
    port = infra.ports["p"]
    body = infra.provider("franceconnect", "ville-p-fc") + infra.provider("agents", "ville-p-agents")
    body += """
[tenant ville-p]
display_name = Ville de Pins
hosts = ville-p.localhost
public_url = http://ville-p.localhost:{port}
providers = franceconnect agents

""".format(port=port)
    body += routes("ville-p", infra.echo.url, [
        ("p-accueil", "/", "access = public"),
        ("p-citoyens", "/citoyens", "provider = franceconnect\nclaims = given_name family_name"),
        ("p-agents", "/agents", "provider = agents\nclaims = family_name"),
        ("p-intranet", "/intranet", "providers = agents\nclaims = family_name"),
        ("p-guichet", "/guichet", "providers = franceconnect agents\nclaims = family_name"),
        # neither provider nor providers: the tenant's providers
        ("p-mixte", "/mixte", "claims = family_name"),
    ])
    g = Gateway(infra, "gw-p", port, ["ville-p.localhost"],
                {"franceconnect": "ville-p-fc", "agents": "ville-p-agents"}, body)
    yield g
    g.stop()


@pytest.fixture(scope="module")
def gw_s(infra):
    """ville-s: one provider (eidas1 by default), the sign-in page on, an eidas2 route."""
    port = infra.ports["s"]
    body = infra.provider("franceconnect", "ville-s-fc") + """
[tenant ville-s]
display_name = Ville de Sables
hosts = ville-s.localhost
public_url = http://ville-s.localhost:{port}
provider = franceconnect
sign_in_page = on

""".format(port=port)
    body += routes("ville-s", infra.echo.url, [
        ("s-accueil", "/", "access = public"),
        ("s-demarches", "/demarches", "claims = given_name family_name"),
        ("s-fort", "/fort", "acr = eidas2\nclaims = family_name"),
    ])
    g = Gateway(infra, "gw-s", port, ["ville-s.localhost"], {"franceconnect": "ville-s-fc"}, body)
    yield g
    g.stop()


@pytest.fixture(scope="module")
def gw_t(infra):
    """ville-t: three host names, no cookie_domain, the callback registered on the first."""
    port = infra.ports["t"]
    body = infra.provider("franceconnect", "ville-t-fc") + """
[tenant ville-t]
display_name = Ville de Tilleuls
hosts = {hosts}
public_url = http://{h1}:{port}
provider = franceconnect

""".format(hosts=" ".join(T_HOSTS), h1=T_HOSTS[0], port=port)
    body += routes("ville-t", infra.echo.url, [
        ("t-accueil", "/", "access = public"),
        ("t-demarches", "/demarches", "claims = given_name family_name birthdate"),
    ])
    g = Gateway(infra, "gw-t", port, T_HOSTS, {"franceconnect": "ville-t-fc"}, body)
    yield g
    g.stop()


# ---------------------------------------------------------------- a browser's navigation

def query(url):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True))


def set_cookie_values(r, name):
    """The values the response sets for cookie `name` (deletions left out)."""
    out = []
    for k, v in r.getheaders():
        if k.lower() != "set-cookie":
            continue
        n, _, rest = v.partition("=")
        value = rest.split(";", 1)[0]
        if n.strip() == name and value and "max-age=0" not in v.lower():
            out.append(value)
    return out


def login_links(page_body):
    text = html.unescape(page_body.decode("utf-8", "replace"))
    return re.findall(r'href="([^"]*/sesame/login\?[^"]*)"', text)


class Step:
    def __init__(self, url, status, location=None, set_cookies=(), kind="gateway"):
        self.url, self.status, self.location = url, status, location
        self.set_cookies, self.kind = list(set_cookies), kind
        u = urllib.parse.urlsplit(url)
        self.host, self.path = u.hostname, u.path

    def __repr__(self):
        return "%s %s -> %s%s" % (self.status, self.url,
                                  self.location or "", " sets " + ",".join(self.set_cookies)
                                  if self.set_cookies else "")


class Flow:
    """Follows a navigation as a browser would: redirects to any of the tenant's host names
    (same port, Host header from the URL, cookies per host name), Sésame's sign-in page (the
    provider link of `provider`, else the first), and the mock provider's authorize URL, where
    `login` is chosen at once (autologin). Every authorization is counted; one more than
    max_authorizations fails at once (a gateway sending the browser round in circles)."""

    def __init__(self, gw, browser, login="marie", provider=None, max_steps=25,
                 max_authorizations=1):
        self.gw, self.b, self.login, self.provider = gw, browser, login, provider
        self.mock = gw.infra.mock
        self.max_steps, self.max_authorizations = max_steps, max_authorizations
        self.steps = []
        self.authorizations = []  # the authorize URLs the browser was sent to

    def chain(self):
        return "\n  ".join(repr(s) for s in self.steps)

    def go(self, url, stop=None):
        """Returns (last response, its URL), or (response, next URL) when stop(next URL) is
        true before following it."""
        for _ in range(self.max_steps):
            u = urllib.parse.urlsplit(url)
            assert u.scheme == "http" and u.hostname in self.gw.hosts and u.port == self.gw.port, \
                "the navigation left the tenant's host names: %s\n  %s" % (url, self.chain())
            r = self.b.get(url)
            loc = r.getheader("Location")
            nxt = urllib.parse.urljoin(url, loc) if loc else None
            self.steps.append(Step(url, r.status, nxt, [n for n in ("sesame", "sesame_login")
                                                        if set_cookie_values(r, n)]))
            if r.status in REDIRECTS:
                assert nxt, "redirect without Location: %s" % url
                if stop and stop(nxt):
                    return r, nxt
                if nxt.startswith(self.mock.issuer + "/authorize?"):
                    nxt = self.provider_step(nxt)
                    if stop and stop(nxt):
                        return r, nxt
                url = nxt
                continue
            if r.status == 200 and u.path == "/sesame/signin":
                url = self.pick_link(url, r)
                continue
            return r, url
        raise AssertionError("more than %d steps:\n  %s" % (self.max_steps, self.chain()))

    def pick_link(self, url, page):
        links = login_links(page.body)
        assert links, "sign-in page without a provider link: %s\n%s" % (url, page.body[:2000])
        if self.provider:
            links = [l for l in links if query(l).get("provider") == self.provider]
            assert links, "the sign-in page has no link for provider %s: %s" % (self.provider, url)
        return urllib.parse.urljoin(url, links[0])

    def provider_step(self, authorize):
        self.authorizations.append(authorize)
        assert len(self.authorizations) <= self.max_authorizations, \
            "sent to the provider %d times (at most %d expected):\n  %s\n  -> %s" % (
                len(self.authorizations), self.max_authorizations, self.chain(), authorize)
        q = query(authorize)
        if self.provider:
            assert q.get("client_id") == self.gw.providers[self.provider], \
                "authorize for %s with client %s" % (self.provider, q.get("client_id"))
        self.mock.autologin(self.login)
        a = harness.http_request(authorize, ssl_context=self.mock.ssl_context())
        callback = a.header("Location")
        self.steps.append(Step(authorize, a.status, callback, kind="provider"))
        assert a.status in (302, 303) and callback, (a.status, a.body[:300])
        assert "code=" in callback, "the provider refused: %s" % callback
        return callback


def authorize_log(mock, since):
    return [e for e in mock.log(since) if e.get("endpoint") == "authorize"]


def mock_mark(mock):
    log = mock.log()
    return log[-1]["seq"] if log else 0


def identity(r):
    assert r.status == 200, (r.status, r.body[:300])
    return echoed(r.body)["h"]


# ---------------------------------------------------------------- the mock's fc-stepup mode

def _id_token_claims(mock, client, acr_values):
    url, state, nonce = mock.authorize_url(client["client_id"], client["redirect_uris"][0],
                                           acr_values=acr_values)
    mock.autologin("marie")
    reply = mock.request("GET", url)
    assert reply.status == 302
    params = dict(reply.location_params())
    if "code" not in params:
        return params
    body = urllib.parse.urlencode({"grant_type": "authorization_code", "code": params["code"],
                                   "redirect_uri": client["redirect_uris"][0],
                                   "client_id": client["client_id"],
                                   "client_secret": client["client_secret"]})
    tok = mock.request("POST", mock.issuer + "/token", body,
                       {"Content-Type": "application/x-www-form-urlencoded"})
    assert tok.status == 200, tok.text()
    payload = tok.json()["id_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["nonce"] == nonce
    return claims


@pytest.mark.parametrize("asked,granted", [(None, "eidas1"), ("eidas1", "eidas1"),
                                           ("eidas2", "eidas2"), ("eidas1 eidas2", "eidas2"),
                                           ("eidas3", None), ("eidas2 eidas3", None), ("", None)])
def test_mock_stepup_mode_grants_highest_level_asked(infra, asked, granted):
    mock = infra.mock
    assert mock.discovery()["acr_values_supported"] == ["eidas1", "eidas2"]
    claims = _id_token_claims(mock, infra.clients["ville-s-fc"], asked)
    if granted is None:
        assert claims.get("error") == "invalid_acr", claims
    else:
        assert claims["acr"] == granted
        assert claims["amr"] == (["pwd"] if granted == "eidas1" else ["pwd", "mfa"])


def test_mock_stepup_mode_acr_low_scenario(infra):
    infra.mock.scenario("acr_low")
    assert _id_token_claims(infra.mock, infra.clients["ville-s-fc"], "eidas2")["acr"] == "eidas1"
    assert _id_token_claims(infra.mock, infra.clients["ville-s-fc"], "eidas1")["acr"] == "eidas0"


# ---------------------------------------------------------------- routes bound to providers

def assert_refused(gw, b, path, accepted):
    """A session from a provider the route does not accept: never forwarded; a navigation is
    sent to sign in with an accepted provider, a script request gets 401. Returns the sign-in
    URL (absolute)."""
    before = gw.infra.echo.stats()["requests_total"]
    url = gw.url(path)
    r = b.get(url)
    assert r.status != 200, "%s answered 200 to a session of a provider it does not accept" % path
    assert r.status == 302, (path, r.status, r.body[:300])
    loc = urllib.parse.urljoin(url, r.getheader("Location"))
    u = urllib.parse.urlsplit(loc)
    assert u.path in ("/sesame/signin", "/sesame/login"), loc
    q = query(loc)
    assert q.get("provider") in accepted, "%s: sign-in asks provider %r, accepted: %s" % (
        path, q.get("provider"), sorted(accepted))
    assert urllib.parse.urlsplit(q.get("return_to", "")).path == path, loc
    for headers in (XHR, JSON_API):
        x = b.get(url, headers=headers)
        assert x.status == 401, (path, headers, x.status, x.body[:300])
        assert x.getheader("Location") is None
    assert gw.infra.echo.stats()["requests_total"] == before, \
        "the upstream of %s received a request for a session it must refuse" % path
    return loc


def sign_in_with(gw, b, provider, path, login="marie"):
    """A fresh sign-in from `path` with `provider`; returns the identity headers on `path`."""
    f = Flow(gw, b, login=login, provider=provider)
    r, final = f.go(gw.url(path))
    assert len(f.authorizations) == 1, f.chain()
    assert urllib.parse.urlsplit(final).path == path, f.chain()
    h = identity(r)
    assert h["x-sesame-provider"] == [provider], f.chain()
    return h


def test_route_bound_to_provider_refuses_other_sessions_franceconnect_first(gw_p):
    b = gw_p.browser()
    h = sign_in_with(gw_p, b, "franceconnect", "/citoyens")
    assert h["x-sesame-family-name"] == ["MARTIN"]
    assert h["x-sesame-acr"] == ["eidas1"]
    # routes accepting franceconnect: the route's providers, the tenant's providers
    for path in ("/guichet", "/mixte"):
        assert identity(b.get(gw_p.url(path)))["x-sesame-provider"] == ["franceconnect"], path
    # routes accepting agents only
    loc = assert_refused(gw_p, b, "/agents", {"agents"})
    assert_refused(gw_p, b, "/intranet", {"agents"})
    # signing in with the right provider opens the route
    f = Flow(gw_p, b, login="marie", provider="agents")
    r, final = f.go(loc)
    assert len(f.authorizations) == 1, f.chain()
    assert urllib.parse.urlsplit(final).path == "/agents", f.chain()
    h = identity(r)
    assert h["x-sesame-provider"] == ["agents"]
    assert h["x-sesame-family-name"] == ["MARTIN"]
    assert identity(b.get(gw_p.url("/intranet")))["x-sesame-provider"] == ["agents"]
    assert identity(b.get(gw_p.url("/agents")))["x-sesame-provider"] == ["agents"]
    # the franceconnect route never opens with the agents session
    r = b.get(gw_p.url("/citoyens"))
    if r.status == 200:
        assert identity(r)["x-sesame-provider"] == ["franceconnect"]
    else:
        assert r.status == 302 and query(r.getheader("Location")).get("provider") == "franceconnect"


def test_route_bound_to_provider_refuses_other_sessions_agents_first(gw_p):
    b = gw_p.browser()
    h = sign_in_with(gw_p, b, "agents", "/agents", login="karim")
    assert h["x-sesame-family-name"] == ["BENALI"]
    for path in ("/intranet", "/guichet", "/mixte"):
        assert identity(b.get(gw_p.url(path)))["x-sesame-provider"] == ["agents"], path
    loc = assert_refused(gw_p, b, "/citoyens", {"franceconnect"})
    f = Flow(gw_p, b, login="karim", provider="franceconnect")
    r, final = f.go(loc)
    assert len(f.authorizations) == 1, f.chain()
    assert urllib.parse.urlsplit(final).path == "/citoyens", f.chain()
    h = identity(r)
    assert h["x-sesame-provider"] == ["franceconnect"]
    assert h["x-sesame-given-name"] == ["Karim%20Yanis"]
    r = b.get(gw_p.url("/agents"))
    if r.status == 200:
        assert identity(r)["x-sesame-provider"] == ["agents"]
    else:
        assert r.status == 302 and query(r.getheader("Location")).get("provider") == "agents"


def test_no_session_on_provider_bound_route_asks_that_provider(gw_p):
    for path, accepted in (("/citoyens", {"franceconnect"}), ("/agents", {"agents"}),
                           ("/intranet", {"agents"})):
        b = gw_p.browser()
        r = b.get(gw_p.url(path))
        assert r.status == 302, (path, r.status)
        loc = urllib.parse.urljoin(gw_p.url(path), r.getheader("Location"))
        assert urllib.parse.urlsplit(loc).path in ("/sesame/signin", "/sesame/login"), loc
        assert query(loc).get("provider") in accepted, (path, loc)
        assert b.get(gw_p.url(path), headers=XHR).status == 401


# ---------------------------------------------------------------- acr step-up

def test_step_up_from_eidas1_to_eidas2_through_the_sign_in_page(gw_s):
    mock = gw_s.infra.mock
    b = gw_s.browser()
    f = Flow(gw_s, b, login="marie")
    r, _ = f.go(gw_s.url("/demarches"))
    assert len(f.authorizations) == 1, f.chain()
    assert query(f.authorizations[0]).get("acr_values") == "eidas1"
    assert identity(r)["x-sesame-acr"] == ["eidas1"]

    before = gw_s.infra.echo.stats()["requests_total"]
    r = b.get(gw_s.url("/fort"))
    assert r.status == 302, (r.status, r.body[:300])
    signin = urllib.parse.urljoin(gw_s.url("/fort"), r.getheader("Location"))
    assert urllib.parse.urlsplit(signin).path == "/sesame/signin", signin
    assert query(signin).get("acr") == "eidas2", signin
    assert b.get(gw_s.url("/fort"), headers=XHR).status == 401
    assert gw_s.infra.echo.stats()["requests_total"] == before

    page = b.get(signin)
    assert page.status == 200
    links = login_links(page.body)
    assert links, page.body[:2000]
    for link in links:
        assert query(link).get("acr") == "eidas2", "the provider link lost acr=eidas2: %s" % link
    login = urllib.parse.urljoin(signin, links[0])
    r = b.get(login)
    assert r.status == 302, (r.status, r.body[:300])
    authorize = r.getheader("Location")
    assert authorize.startswith(mock.issuer + "/authorize?"), authorize
    assert query(authorize).get("acr_values") == "eidas2", authorize
    mock.autologin("marie")
    a = harness.http_request(authorize, ssl_context=mock.ssl_context())
    r = b.get(a.header("Location"))
    assert r.status == 303, (r.status, r.body[:300])
    assert urllib.parse.urlsplit(urllib.parse.urljoin(signin, r.getheader("Location"))).path == "/fort"
    h = identity(b.get(gw_s.url("/fort")))
    assert h["x-sesame-acr"] == ["eidas2"]
    assert h["x-sesame-family-name"] == ["MARTIN"]
    me = b.get(gw_s.url("/sesame/me"), headers=JSON_API)
    assert me.status == 200 and json.loads(me.body)["acr"] == "eidas2"
    # a higher level than asked opens the eidas1 routes too
    assert identity(b.get(gw_s.url("/demarches")))["x-sesame-acr"] == ["eidas2"]


def test_eidas2_route_without_session_asks_eidas2_from_the_start(gw_s):
    b = gw_s.browser()
    f = Flow(gw_s, b, login="theo")
    r, final = f.go(gw_s.url("/fort"))
    assert len(f.authorizations) == 1, f.chain()
    assert query(f.authorizations[0]).get("acr_values") == "eidas2", f.chain()
    assert urllib.parse.urlsplit(final).path == "/fort", f.chain()
    assert identity(r)["x-sesame-acr"] == ["eidas2"]


# ---------------------------------------------------------------- the callback and its browser

def start_login(gw, b, login="marie"):
    """/sesame/login in browser b; returns the provider's callback URL (not yet visited)."""
    r = b.get(gw.url("/sesame/login?return_to=%2Fdemarches"))
    assert r.status == 302, (r.status, r.body[:300])
    assert set_cookie_values(r, "sesame_login"), "no browser binding cookie"
    authorize = r.getheader("Location")
    assert authorize.startswith(gw.infra.mock.issuer + "/authorize?"), authorize
    gw.infra.mock.autologin(login)
    a = harness.http_request(authorize, ssl_context=gw.infra.mock.ssl_context())
    assert a.status in (302, 303), a.status
    return a.header("Location")


def test_callback_from_another_browser_refused_then_own_browser_succeeds(gw_s):
    before = gw_s.infra.echo.stats()["requests_total"]
    citizen = gw_s.browser()
    callback = start_login(gw_s, citizen, "marie")
    # a browser without the binding cookie
    thief = gw_s.browser()
    r = thief.get(callback)
    assert r.status == 400, (r.status, r.body[:300])
    assert 'lang="fr"' in r.body.decode()
    assert not set_cookie_values(r, "sesame"), "a session was given to another browser"
    # a browser with its own, different binding cookie (its own sign-in started)
    other = gw_s.browser()
    other_callback = start_login(gw_s, other, "jean")
    assert other.cookies["ville-s.localhost"]["sesame_login"] != \
        citizen.cookies["ville-s.localhost"]["sesame_login"]
    r = other.get(callback)
    assert r.status == 400, (r.status, r.body[:300])
    assert not set_cookie_values(r, "sesame")
    assert "sesame" not in other.cookies.get("ville-s.localhost", {})
    assert gw_s.infra.echo.stats()["requests_total"] == before
    # the citizen's own browser still completes its sign-in with the same callback URL
    r = citizen.get(callback)
    assert r.status == 303, (r.status, r.body[:300])
    assert urllib.parse.urlsplit(r.getheader("Location")).path == "/demarches"
    assert set_cookie_values(r, "sesame")
    h = identity(citizen.get(gw_s.url("/demarches")))
    assert h["x-sesame-family-name"] == ["MARTIN"]
    # still single use
    assert citizen.get(callback).status == 400
    # and the other browser's own sign-in was not disturbed
    r = other.get(other_callback)
    assert r.status == 303, (r.status, r.body[:300])
    assert identity(other.get(gw_s.url("/demarches")))["x-sesame-family-name"] == \
        ["D%27ALMEIDA-L%C3%89V%C3%8AQUE"]


# ---------------------------------------------------------------- one tenant, several hosts

def is_hop(url, host, port):
    u = urllib.parse.urlsplit(url)
    return u.hostname == host and u.port == port and u.path == "/sesame/hop" and \
        bool(query(url).get("ticket"))


def test_one_sign_in_opens_every_host_of_the_tenant(gw_t):
    h1, h2, h3 = T_HOSTS
    port = gw_t.port
    mock = gw_t.infra.mock
    mark = mock_mark(mock)
    b = gw_t.browser()
    seen = {}

    # a script on h2 without a session: 401, no redirect
    assert b.get(gw_t.url("/demarches", h2), headers=XHR).status == 401

    # h2 without a session: signs in on h1 (the registered callback), comes back through a hop
    f2 = Flow(gw_t, b, login="marie")
    r, final = f2.go(gw_t.url("/demarches?onglet=2", h2))
    assert len(f2.authorizations) == 1, f2.chain()
    authorize = f2.authorizations[0]
    assert query(authorize)["redirect_uri"] == "http://%s:%d/sesame/callback" % (h1, port)
    callbacks = [s for s in f2.steps if s.kind == "gateway" and s.path == "/sesame/callback"]
    assert callbacks and all(s.host == h1 for s in callbacks), f2.chain()
    hops = [i for i, s in enumerate(f2.steps) if s.kind == "gateway" and is_hop(s.url, h2, port)]
    assert len(hops) == 1, f2.chain()
    hop = f2.steps[hops[0]]
    assert f2.steps[hops[0] - 1].host == h1 and f2.steps[hops[0] - 1].location == hop.url, \
        "the hop to h2 does not come from h1:\n  " + f2.chain()
    assert hop.status == 303, f2.chain()
    back = urllib.parse.urlsplit(hop.location)
    assert (back.hostname, back.port, back.path, back.query) == (h2, port, "/demarches", "onglet=2"), \
        f2.chain()
    assert "sesame" in hop.set_cookies, "the hop set no session cookie on h2:\n  " + f2.chain()
    assert urllib.parse.urlsplit(final).hostname == h2
    seen[h2] = identity(r)

    # h1 got its cookie from the callback
    f1 = Flow(gw_t, b, login="marie", max_authorizations=0)
    r, final = f1.go(gw_t.url("/demarches", h1))
    assert f1.authorizations == [], f1.chain()
    seen[h1] = identity(r)

    # h3, no cookie there: h1's single sign-on sends a ticket back without the provider
    f3 = Flow(gw_t, b, login="marie", max_authorizations=0)
    r, final = f3.go(gw_t.url("/demarches", h3))
    assert f3.authorizations == [], "h3 went to the provider again:\n  " + f3.chain()
    sso = [i for i, s in enumerate(f3.steps) if s.host == h1 and s.path == "/sesame/sso"]
    assert sso, "h3 did not ask h1's /sesame/sso:\n  " + f3.chain()
    assert is_hop(f3.steps[sso[0]].location or "", h3, port), \
        "h1's /sesame/sso did not send the browser straight back to h3's hop:\n  " + f3.chain()
    hop3 = [s for s in f3.steps if is_hop(s.url, h3, port)]
    assert len(hop3) == 1 and hop3[0].status == 303 and "sesame" in hop3[0].set_cookies, f3.chain()
    assert urllib.parse.urlsplit(hop3[0].location).path == "/demarches", f3.chain()
    assert urllib.parse.urlsplit(final).hostname == h3
    seen[h3] = identity(r)

    # each host opened the route, itself (the Host the upstream received), with the identity
    for host in T_HOSTS:
        h = seen[host]
        assert h["host"] == ["%s:%d" % (host, port)], host
        assert h["x-sesame-family-name"] == ["MARTIN"], host
        assert h["x-sesame-birthdate"] == ["1962-08-24"], host
        assert h["x-sesame-account"] == seen[h1]["x-sesame-account"], host
        assert set(b.cookies.get(host, {})) >= {"sesame"}, host
    # once more on each host: no navigation at all now
    for host in T_HOSTS:
        assert identity(b.get(gw_t.url("/demarches", host)))["x-sesame-provider"] == ["franceconnect"]

    # exactly one authorization at the provider for the whole journey
    auths = [e for e in authorize_log(mock, mark)
             if (e.get("params") or {}).get("client_id") == "ville-t-fc"]
    assert len(auths) == 1, auths


def with_jar(gw, host, jar):
    """A browser whose cookies for `host` are `jar` (copied)."""
    b = gw.browser()
    b.cookies[host] = dict(jar)
    return b


def test_hop_ticket_is_single_use_and_bound_to_its_host(gw_t):
    h1, h2, h3 = T_HOSTS
    port = gw_t.port
    mock = gw_t.infra.mock
    mark = mock_mark(mock)
    b = gw_t.browser()
    # sign in from h2, stopped just before the hop with its ticket: keep the URL and h2's
    # cookies at that moment (whatever binds the hop to this browser), then redeem it
    f2 = Flow(gw_t, b, login="paola")
    _, hop2 = f2.go(gw_t.url("/demarches", h2), stop=lambda u: is_hop(u, h2, port))
    assert len(f2.authorizations) == 1, f2.chain()
    assert is_hop(hop2, h2, port), f2.chain()
    h2_before_hop = dict(b.cookies.get(h2, {}))
    r, final = f2.go(hop2)
    assert urllib.parse.urlsplit(final).hostname == h2, f2.chain()
    assert identity(r)["x-sesame-family-name"] == ["SANTUCCI"]

    # a ticket for h3, stopped before it reaches h3
    f3 = Flow(gw_t, b, login="paola", max_authorizations=0)
    _, hop3 = f3.go(gw_t.url("/demarches", h3), stop=lambda u: is_hop(u, h3, port))
    assert f3.authorizations == [], f3.chain()
    assert is_hop(hop3, h3, port), f3.chain()
    h3_jar = dict(b.cookies.get(h3, {}))
    # presented on another host of the tenant (h2, then h1): refused, by a browser without
    # cookies, by the citizen's own browser, and by one holding there h3's cookies
    for host in (h2, h1):
        wrong = urllib.parse.urlunsplit(urllib.parse.urlsplit(hop3)._replace(
            netloc="%s:%d" % (host, port)))
        for browser in (gw_t.browser(), b, with_jar(gw_t, host, h3_jar)):
            jar = dict(browser.cookies.get(host, {}))
            r = browser.get(wrong)
            assert r.status == 400, (host, r.status, r.getheader("Location"), r.body[:300])
            assert not set_cookie_values(r, "sesame"), host
            assert browser.cookies.get(host, {}).get("sesame") == jar.get("sesame"), host

    # replayed (h2's ticket was redeemed above): refused, by a browser without cookies, by the
    # citizen's browser, and by one holding h2's cookies as they were before the redemption
    for browser in (gw_t.browser(), b, with_jar(gw_t, h2, h2_before_hop)):
        jar = dict(browser.cookies.get(h2, {}))
        r = browser.get(hop2)
        assert r.status == 400, (r.status, r.getheader("Location"), r.body[:300])
        assert not set_cookie_values(r, "sesame")
        assert browser.cookies.get(h2, {}).get("sesame") == jar.get("sesame")

    # h3 still opens through single sign-on (a fresh ticket), without the provider
    f3 = Flow(gw_t, b, login="paola", max_authorizations=0)
    r, final = f3.go(gw_t.url("/demarches", h3))
    assert f3.authorizations == [], f3.chain()
    assert urllib.parse.urlsplit(final).hostname == h3
    assert identity(r)["x-sesame-family-name"] == ["SANTUCCI"]
    # and h2's session was not harmed by the refused tickets
    assert identity(b.get(gw_t.url("/demarches", h2)))["x-sesame-family-name"] == ["SANTUCCI"]
    auths = [e for e in authorize_log(mock, mark)
             if (e.get("params") or {}).get("client_id") == "ville-t-fc"]
    assert len(auths) == 1, auths


# ---------------------------------------------------------------- cookie_domain at load

COOKIE_CONF = """[server]
listen = 127.0.0.1:8080

[tenant ville-t]
hosts = ville-t.localhost www.ville-t.localhost demarches.ville-t.localhost
public_url = http://ville-t.localhost:8080
cookie_domain = {domain}

[route accueil]
tenant = ville-t
upstream = http://127.0.0.1:9000
access = public
"""
COOKIE_LINE = 7


@pytest.mark.parametrize("domain", ["www.ville-t.localhost", "demarches.ville-t.localhost",
                                    "autre.localhost", "ille-t.localhost",
                                    "ville-t.localhost.example"])
def test_cookie_domain_not_parent_of_every_host_refused(tmp_path, domain):
    path = tmp_path / "sesame.conf"
    path.write_text(COOKIE_CONF.format(domain=domain))
    assert path.read_text().splitlines()[COOKIE_LINE - 1].startswith("cookie_domain")
    rc, out = check_config(str(path))
    assert rc == 1, out
    wanted = re.compile(r"^%s:%d: cookie_domain: \S" % (re.escape(str(path)), COOKIE_LINE))
    assert any(wanted.search(l) for l in out.splitlines()), out


@pytest.mark.parametrize("domain", ["ville-t.localhost"])
def test_cookie_domain_parent_of_every_host_accepted(tmp_path, domain):
    path = tmp_path / "sesame.conf"
    path.write_text(COOKIE_CONF.format(domain=domain))
    rc, out = check_config(str(path))
    assert rc == 0, out
    assert "configuration OK" in out
