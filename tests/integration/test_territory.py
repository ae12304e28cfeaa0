"""One sign-in for a whole territory: communes on their own registrable domains that share a
territory ([territory NAME], gate/hop.h). A citizen signs in once, at the territory's host,
and each commune opens with its own session, its own account (its own accounts plugin) and
only what its routes use; one-time tickets carry the sign-in across the domains without
third-party cookies; logging out anywhere, or an administrator revoking the citizen, ends it
everywhere.

Real processes on loopback: one redis-server, the mock FranceConnect in mode "fc-stepup" (it
grants eidas2 when asked, for the step-up), one echo upstream and one `sesame` serving:

  connexion.agglo-exemple.localhost   the territory "agglo" (franceconnect and agents)
  ville-arbre.localhost               tenant arbre: redis accounts "arbre", franceconnect
  mairie-cerisier.localhost (+ www.)  tenant cerisier: redis accounts "cerisier", the
                                      territory's providers (franceconnect and agents), an
                                      eidas2 route
  agglo-exemple.localhost             tenant exemple: no accounts (the account is the sub)
  ville-dunes.localhost               tenant dunes: agents only
  seule.localhost, www.seule.localhost  tenant seule: no territory, its own provider, two
                                      hosts (the hop of one tenant)

Each *.localhost name is a registrable domain of its own (localhost is a top-level name): no
cookie is shared between them. Everything started is stopped at teardown.
"""

import base64
import hashlib
import html
import os
import re
import subprocess
import time
import urllib.parse

import pytest

import signin_env  # noqa: F401  (puts tests/mockfc on sys.path)
import harness  # noqa: E402
from sesame_env import BUILDDIR, Echo, Redis, Sesame, check_config, free_port, wait_port  # noqa: E402
from signin_env import Browser, echoed  # noqa: E402

os.environ.setdefault("SESAME_PLUGIN_DIR", os.path.join(BUILDDIR, ".libs"))
TOOL = os.path.join(BUILDDIR, "sesame-accounts")

REDIRECTS = (301, 302, 303, 307, 308)
TERRITORY = "connexion.agglo-exemple.localhost"
ARBRE = "ville-arbre.localhost"
CERISIER = "mairie-cerisier.localhost"
CERISIER_WWW = "www.mairie-cerisier.localhost"
EXEMPLE = "agglo-exemple.localhost"
DUNES = "ville-dunes.localhost"
SEULE = "seule.localhost"
SEULE_WWW = "www.seule.localhost"
HOSTS = [TERRITORY, ARBRE, CERISIER, CERISIER_WWW, EXEMPLE, DUNES, SEULE, SEULE_WWW]
MEMBERS = {"arbre": ARBRE, "cerisier": CERISIER, "exemple": EXEMPLE, "dunes": DUNES}
SESSION_PREFIX = "terr:"
ACCOUNT_PREFIX = "terr-comptes:"
SESSION_KEY = base64.b64encode(b"territory-tests-session-key-0123456789-abcdef").decode()
XHR = {"X-Requested-With": "XMLHttpRequest", "Accept": "*/*", "Sec-Fetch-Mode": "cors"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


# ---------------------------------------------------------------- processes

def write_secret(path, value):
    with open(path, "w") as f:
        f.write(value + "\n")
    os.chmod(path, 0o600)
    return path


class Stack:
    """redis + mock (fc-stepup) + echo + one sesame; `extra_session` goes into [session]."""

    def __init__(self, tmp, name="terr", extra_session=""):
        self.tmp, self.name = tmp, name
        self.port = free_port()
        self.procs = []
        self.secrets = {}
        self.clients = {}
        try:
            for cid in ("agglo-fc", "agglo-agents"):
                self._register(cid, TERRITORY)
            self._register("seule-fc", SEULE)
            self.redis = self._start(Redis(tmp))
            self.echo = self._start(Echo(tmp))
            self.mock = self._start(harness.start_mockfc(
                os.path.join(tmp, "mock"), list(self.clients.values()), mode="fc-stepup"))
            self.key = write_secret(os.path.join(tmp, "%s-session.key" % name), SESSION_KEY)
            self.accounts_key = write_secret(os.path.join(tmp, "%s-accounts.key" % name),
                                             "accounts-key-for-the-territory-tests-0123456789")
            self.gw = Sesame(tmp, self.conf_text(extra_session), name=name, port=self.port,
                             wait=False)
            self.procs.append(self.gw)
            wait_port(self.port, timeout=15, proc=self.gw.proc.p)
        except BaseException as exc:
            out = ""
            if getattr(self, "gw", None) is not None:
                out = self.gw.proc.output()[-3000:] + self.gw.errors()[-3000:]
            self.stop()
            if isinstance(exc, Exception):
                raise RuntimeError("the territory stack did not start: %s\n%s" % (exc, out))
            raise

    def _start(self, p):
        self.procs.append(p)
        return p

    def _register(self, client_id, host):
        secret = "secret-%s-%s-0123456789abcdef" % (self.name, client_id)
        self.secrets[client_id] = write_secret(
            os.path.join(self.tmp, "%s-%s.secret" % (self.name, client_id)), secret)
        base = "http://%s:%d/sesame" % (host, self.port)
        self.clients[client_id] = {"client_id": client_id, "client_secret": secret,
                                   "redirect_uris": [base + "/callback"],
                                   "post_logout_redirect_uris": [base + "/logout/callback"],
                                   "id_token_signed_response_alg": "ES256"}

    def provider(self, name, client_id, scopes):
        return """
[provider {name}]
issuer = {issuer}
client_id = {cid}
client_secret_file = {secret}
ca_file = {ca}
scopes = {scopes}
http_timeout = 2s
""".format(name=name, issuer=self.mock.issuer, cid=client_id, secret=self.secrets[client_id],
           ca=self.mock.ca_file, scopes=scopes)

    def conf_text(self, extra_session=""):
        port, echo, tmp, name = self.port, self.echo.url, self.tmp, self.name
        redis = "127.0.0.1:%d" % self.redis.port
        out = """[server]
listen = 127.0.0.1:{port}
workers = 2
upstream_read_timeout = 3s
error_log = {tmp}/{name}-error.log
access_log = {tmp}/{name}-access.log
log_level = debug
plugin_timeout = 5s

[redis]
address = {redis}
prefix = {sp}
command_timeout = 500ms
connect_timeout = 500ms

[session]
secret_file = {key}
{extra_session}
""".format(port=port, tmp=tmp, name=name, redis=redis, sp=SESSION_PREFIX, key=self.key,
           extra_session=extra_session)
        pivot = "openid given_name family_name birthdate gender birthplace birthcountry"
        out += self.provider("franceconnect", "agglo-fc", pivot)
        out += self.provider("agents", "agglo-agents", "openid given_name family_name")
        out += self.provider("fc-seule", "seule-fc", pivot)
        out += """
[territory agglo]
display_name = Agglomération d'Exemple
public_url = http://{t}:{port}
providers = franceconnect agents
provider = franceconnect
accent_color = #18753c
contact_url = http://{t}:{port}/contact
""".format(t=TERRITORY, port=port)
        for section in ("arbre", "cerisier"):
            out += """
[accounts {s}]
plugin = redis
address = {redis}
prefix = {ap}
session_prefix = {sp}
key_file = {akey}
match = sub
policy = create
""".format(s=section, redis=redis, ap=ACCOUNT_PREFIX, sp=SESSION_PREFIX,
           akey=self.accounts_key)
        out += """
[tenant arbre]
display_name = Ville d'Arbre
hosts = {a}
public_url = http://{a}:{port}
territory = agglo
provider = franceconnect
accounts = arbre

[tenant cerisier]
display_name = Mairie de Cerisier
hosts = {c} {cw}
public_url = http://{c}:{port}
territory = agglo
accounts = cerisier

[tenant exemple]
display_name = Services de l'agglomération
hosts = {e}
public_url = http://{e}:{port}
territory = agglo
provider = franceconnect

[tenant dunes]
display_name = Ville de Dunes
hosts = {d}
public_url = http://{d}:{port}
territory = agglo
provider = agents

[tenant seule]
display_name = Ville Seule
hosts = {s} {sw}
public_url = http://{s}:{port}
provider = fc-seule
""".format(a=ARBRE, c=CERISIER, cw=CERISIER_WWW, e=EXEMPLE, d=DUNES, s=SEULE, sw=SEULE_WWW,
           port=port)
        routes = [("arbre", "/demarches", "claims = given_name family_name birthdate"),
                  ("cerisier", "/demarches", "claims = family_name"),
                  ("cerisier", "/fort", "acr = eidas2\nclaims = family_name"),
                  ("exemple", "/demarches", "claims = given_name"),
                  ("dunes", "/demarches", "claims = family_name"),
                  ("seule", "/demarches", "claims = family_name")]
        for tenant in ("arbre", "cerisier", "exemple", "dunes", "seule"):
            out += "\n[route %s-accueil]\ntenant = %s\npath = /\nupstream = %s\naccess = public\n" % (
                tenant, tenant, echo)
        for tenant, path, extra in routes:
            out += "\n[route %s%s]\ntenant = %s\npath = %s\nupstream = %s\n%s\n" % (
                tenant, path.replace("/", "-"), tenant, path, echo, extra)
        return out

    def url(self, host, path):
        return "http://%s:%d%s" % (host, self.port, path)

    def browser(self):
        return Browser(self.port)

    def tool(self, section, tenant, *args):
        p = subprocess.run([TOOL, "-c", self.gw.conf_path, "-a", section, "-t", tenant]
                           + list(args), capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout, p.stderr

    def stop(self):
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception:  # noqa: BLE001  (stop the others whatever happens)
                pass
        self.procs = []


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(str(tmp_path_factory.mktemp("territory")))
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def clean_mock(stack):
    stack.mock.scenario("none")
    stack.mock.autologin(None)
    yield
    stack.mock.scenario("none")
    stack.mock.autologin(None)


# ---------------------------------------------------------------- a browser's navigation

def query(url):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True))


def set_cookie_values(r, name):
    out = []
    for k, v in r.getheaders():
        if k.lower() != "set-cookie":
            continue
        n, _, rest = v.partition("=")
        value = rest.split(";", 1)[0]
        if n.strip() == name and value and "max-age=0" not in v.lower():
            out.append(value)
    return out


class Step:
    def __init__(self, url, status, location=None, kind="gateway", cookies=()):
        self.url, self.status, self.location, self.kind = url, status, location, kind
        self.cookies = list(cookies)
        u = urllib.parse.urlsplit(url)
        self.host, self.path = u.hostname, u.path

    def __repr__(self):
        return "%s %s -> %s%s" % (self.status, self.url, self.location or "",
                                  " sets " + ",".join(self.cookies) if self.cookies else "")


class Flow:
    """Follows a navigation as a browser would, across every host name of the stack (same port,
    cookies per host name), through Sésame's sign-in page (the link of `provider`, else the
    first) and the mock's authorize URL, where `login` is chosen at once. Authorizations are
    counted: one more than max_authorizations fails at once."""

    def __init__(self, stack, browser, login="marie", provider=None, max_authorizations=1,
                 max_steps=30):
        self.stack, self.b, self.login, self.provider = stack, browser, login, provider
        self.mock = stack.mock
        self.max_authorizations, self.max_steps = max_authorizations, max_steps
        self.steps, self.authorizations, self.pages = [], [], []

    def chain(self):
        return "\n  ".join(repr(s) for s in self.steps)

    def go(self, url, stop=None):
        for _ in range(self.max_steps):
            u = urllib.parse.urlsplit(url)
            assert u.scheme == "http" and u.hostname in HOSTS and u.port == self.stack.port, \
                "the navigation left the stack's host names: %s\n  %s" % (url, self.chain())
            r = self.b.get(url)
            loc = r.getheader("Location")
            nxt = urllib.parse.urljoin(url, loc) if loc else None
            self.steps.append(Step(url, r.status, nxt, cookies=[
                n for n in ("sesame", "sesame_hop", "sesame_login") if set_cookie_values(r, n)]))
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
                self.pages.append((url, r))
                url = self.pick_link(url, r)
                continue
            return r, url
        raise AssertionError("more than %d steps:\n  %s" % (self.max_steps, self.chain()))

    def pick_link(self, url, page):
        text = html.unescape(page.body.decode("utf-8", "replace"))
        links = re.findall(r'href="([^"]*/sesame/login\?[^"]*)"', text)
        assert links, "sign-in page without a provider link: %s\n%s" % (url, text[:2000])
        if self.provider:
            links = [l for l in links if query(l).get("provider") == self.provider]
            assert links, "the sign-in page has no link for %s: %s" % (self.provider, url)
        return urllib.parse.urljoin(url, links[0])

    def provider_step(self, authorize):
        self.authorizations.append(authorize)
        assert len(self.authorizations) <= self.max_authorizations, \
            "sent to the provider %d times (at most %d expected):\n  %s\n  -> %s" % (
                len(self.authorizations), self.max_authorizations, self.chain(), authorize)
        self.mock.autologin(self.login)
        a = harness.http_request(authorize, ssl_context=self.mock.ssl_context())
        callback = a.header("Location")
        self.steps.append(Step(authorize, a.status, callback, kind="provider"))
        assert a.status in (302, 303) and callback and "code=" in callback, \
            "the provider refused: %s %s" % (a.status, callback)
        return callback


def identity(r):
    assert r.status == 200, (r.status, r.getheader("Location"), r.body[:300])
    return echoed(r.body)["h"]


def open_signed_in(stack, b, host, path="/demarches", login="marie", provider=None,
                   authorizations=0):
    """Opens host/path in browser b, expecting exactly `authorizations` sign-ins at the
    provider; returns (identity headers, flow)."""
    f = Flow(stack, b, login=login, provider=provider, max_authorizations=authorizations)
    r, final = f.go(stack.url(host, path))
    assert len(f.authorizations) == authorizations, f.chain()
    assert urllib.parse.urlsplit(final).hostname == host, f.chain()
    assert urllib.parse.urlsplit(final).path == path, f.chain()
    return identity(r), f


def mock_mark(mock):
    log = mock.log()
    return log[-1]["seq"] if log else 0


def authorizations_since(mock, mark, client_id=None):
    return [e for e in mock.log(mark) if e.get("endpoint") == "authorize" and
            (client_id is None or (e.get("params") or {}).get("client_id") == client_id)]


def is_ticket(url, host, port):
    u = urllib.parse.urlsplit(url)
    return u.hostname == host and u.port == port and u.path == "/sesame/hop" and \
        bool(query(url).get("ticket"))


def redis_key_of(prefix, cookie):
    raw = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))
    return "%ss:%s" % (prefix, hashlib.sha256(raw).hexdigest())


def signed_out_everywhere(stack, b, hosts):
    for host in hosts:
        r = b.get(stack.url(host, "/demarches"))
        assert r.status == 302, (host, r.status, r.body[:200])
        assert urllib.parse.urlsplit(r.getheader("Location")).hostname == TERRITORY, host
        x = b.get(stack.url(host, "/demarches"), headers=XHR)
        assert x.status == 401, (host, x.status)


# ---------------------------------------------------------------- one sign-in, every commune

def test_sign_in_once_every_commune_opens_with_its_own_account(stack):
    mock = stack.mock
    mark = mock_mark(mock)
    b = stack.browser()
    before = stack.echo.stats()["requests_total"]

    # a script without a session: 401, never a redirect
    assert b.get(stack.url(ARBRE, "/demarches"), headers=XHR).status == 401

    # Ville d'Arbre: signs in at the territory's host (where the callback is registered)
    ha, fa = open_signed_in(stack, b, ARBRE, login="marie", authorizations=1)
    q = query(fa.authorizations[0])
    assert q["client_id"] == "agglo-fc"
    assert q["redirect_uri"] == stack.url(TERRITORY, "/sesame/callback")
    callbacks = [s for s in fa.steps if s.path == "/sesame/callback"]
    assert callbacks and all(s.host == TERRITORY for s in callbacks), fa.chain()
    # the territory's sign-in page names the communes in plain French
    assert fa.pages, "no sign-in page was shown:\n  " + fa.chain()
    page_url, page = fa.pages[0]
    assert urllib.parse.urlsplit(page_url).hostname == TERRITORY
    text = html.unescape(page.body.decode())
    assert 'lang="fr"' in text
    assert "Agglomération d'Exemple" in text
    for name in ("Ville d'Arbre", "Mairie de Cerisier", "Services de l'agglomération",
                 "Ville de Dunes"):
        assert "<li>%s</li>" % name in text, name
    assert "Ville Seule" not in text
    assert "Une seule connexion" in text
    # no token and no personal data in any URL: only the ticket
    sub = harness.expected_sub("agglo-fc", "marie")
    for s in fa.steps:
        for u in (s.url, s.location or ""):
            for secret in ("MARTIN", "Marie", "1962", sub, "eyJ", "id_token"):
                assert secret not in u, "%s in a URL: %s" % (secret, u)
    ticket_steps = [s for s in fa.steps if is_ticket(s.url, ARBRE, stack.port)]
    assert len(ticket_steps) == 1 and ticket_steps[0].status == 303 and \
        "sesame" in ticket_steps[0].cookies, fa.chain()

    # the other communes open without the provider
    hc, fc = open_signed_in(stack, b, CERISIER)
    sso = [s for s in fc.steps if s.host == TERRITORY and s.path == "/sesame/sso"]
    assert len(sso) == 1 and is_ticket(sso[0].location or "", CERISIER, stack.port), fc.chain()
    he, _ = open_signed_in(stack, b, EXEMPLE)
    hw, _ = open_signed_in(stack, b, CERISIER_WWW)

    # each upstream got its own tenant's account and only what its routes use
    assert ha["x-sesame-family-name"] == ["MARTIN"] and ha["x-sesame-birthdate"] == ["1962-08-24"]
    assert hc["x-sesame-family-name"] == ["MARTIN"] and "x-sesame-birthdate" not in hc
    assert he["x-sesame-given-name"] == ["Marie%20Claire%20Odile"] and "x-sesame-family-name" not in he
    acc_a, acc_c, acc_e = ha["x-sesame-account"][0], hc["x-sesame-account"][0], he["x-sesame-account"][0]
    assert len({acc_a, acc_c, acc_e}) == 3, (acc_a, acc_c, acc_e)
    assert acc_e == sub, "a commune without accounts plugin sees the provider's sub"
    assert sub not in (acc_a, acc_c)
    assert hw["x-sesame-account"] == [acc_c], "one account for both hosts of cerisier"
    rc, out, err = stack.tool("arbre", "arbre", "find-sub", "franceconnect", sub)
    assert (rc, out.strip()) == (0, acc_a), (rc, out, err)
    rc, out, err = stack.tool("cerisier", "cerisier", "find-sub", "franceconnect", sub)
    assert (rc, out.strip()) == (0, acc_c), (rc, out, err)
    for h, host in ((ha, ARBRE), (hc, CERISIER), (he, EXEMPLE), (hw, CERISIER_WWW)):
        assert h["host"] == ["%s:%d" % (host, stack.port)]
        assert h["x-sesame-provider"] == ["franceconnect"] and h["x-sesame-acr"] == ["eidas1"]
        assert set(b.cookies.get(host, {})) >= {"sesame"}, host
    # host-only cookies: one per host name, and no two hosts share a session id
    ids = [b.cookies[h]["sesame"] for h in (TERRITORY, ARBRE, CERISIER, CERISIER_WWW, EXEMPLE)]
    assert len(set(ids)) == len(ids), ids
    # once more on each commune: no navigation at all now
    for host in (ARBRE, CERISIER, EXEMPLE):
        assert b.get(stack.url(host, "/demarches")).status == 200
    # one authorization for the whole journey
    assert len(authorizations_since(mock, mark)) == 1
    assert stack.echo.stats()["requests_total"] == before + 7


def test_the_territory_host_serves_no_route_and_a_member_signs_in_nowhere_else(stack):
    b = stack.browser()
    assert b.get(stack.url(TERRITORY, "/demarches")).status == 404
    assert b.get(stack.url(TERRITORY, "/sesame/health")).status == 200
    # a member's own sign-in endpoints send to the territory; its own sso refuses
    for path in ("/sesame/signin?return_to=%2Fdemarches", "/sesame/login?return_to=%2Fdemarches"):
        r = b.get(stack.url(ARBRE, path))
        assert r.status == 302, (path, r.status)
        loc = r.getheader("Location")
        assert urllib.parse.urlsplit(loc).hostname == TERRITORY and "/sesame/sso?" in loc, loc
    back = stack.url(CERISIER, "/sesame/hop?n=" + "A" * 43 + "&r=" +
                     base64.urlsafe_b64encode(b"/demarches").decode().rstrip("="))
    r = b.get(stack.url(ARBRE, "/sesame/sso?return_to=" + urllib.parse.quote(back, safe="")))
    assert r.status == 400
    # the territory's sso accepts return URLs on members only
    for bad in (stack.url(SEULE, "/sesame/hop?n=" + "A" * 43 + "&r=L2E"), "https://evil.example/",
                stack.url(TERRITORY, "/sesame/hop?n=" + "A" * 43 + "&r=L2E")):
        r = b.get(stack.url(TERRITORY, "/sesame/sso?return_to=" + urllib.parse.quote(bad, safe="")))
        assert r.status == 400, (bad, r.status)


# ---------------------------------------------------------------- tickets

def ticket_for(stack, b, host, login="paola", authorizations=0):
    """Navigates to host/demarches and stops before the ticket reaches host: returns (flow,
    ticket URL)."""
    f = Flow(stack, b, login=login, max_authorizations=authorizations)
    _, url = f.go(stack.url(host, "/demarches"), stop=lambda u: is_ticket(u, host, stack.port))
    assert is_ticket(url, host, stack.port), f.chain()
    assert len(f.authorizations) == authorizations, f.chain()
    return f, url


def assert_refused(b, url, host):
    jar = dict(b.cookies.get(host, {}))
    r = b.get(url)
    assert r.status == 400, (r.status, r.getheader("Location"), r.body[:300])
    assert 'lang="fr"' in r.body.decode()
    assert not set_cookie_values(r, "sesame")
    assert b.cookies.get(host, {}).get("sesame") == jar.get("sesame")


def with_territory_session(stack, b):
    """A browser holding only b's territory cookie: no session on any commune yet."""
    nb = stack.browser()
    nb.cookies[TERRITORY] = dict(b.cookies[TERRITORY])
    return nb


def moved(url, host, port):
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(
        netloc="%s:%d" % (host, port)))


def test_replayed_expired_foreign_tickets_refused(stack):
    port = stack.port
    b = stack.browser()
    open_signed_in(stack, b, ARBRE, login="paola", authorizations=1)

    # replayed: redeemed once, refused after, even with the cookies the browser had before
    _, url = ticket_for(stack, b, CERISIER)
    before = dict(b.cookies[CERISIER])
    r = b.get(url)
    assert r.status == 303 and set_cookie_values(r, "sesame"), (r.status, r.body[:300])
    replay = Browser(port)
    replay.cookies[CERISIER] = before
    assert_refused(replay, url, CERISIER)
    assert_refused(b, url, CERISIER)

    # without the hop cookie of the browser that asked for it: refused, and not consumed
    _, url = ticket_for(stack, b, EXEMPLE)
    assert_refused(Browser(port), url, EXEMPLE)
    assert b.get(url).status == 303

    # foreign tenant: a ticket minted for exemple, presented at another commune or on the other
    # host of one (with a hop cookie that matches its n), or at a tenant outside the territory
    for host in (CERISIER_WWW, ARBRE, SEULE_WWW):
        nb = with_territory_session(stack, b)
        _, url = ticket_for(stack, nb, EXEMPLE)
        other = Browser(port)
        other.cookies[host] = {"sesame_hop": query(url)["n"]}
        assert_refused(other, moved(url, host, port), host)

    # expired: 30 s in Redis; shortened by hand
    nb = with_territory_session(stack, b)
    _, url = ticket_for(stack, nb, CERISIER_WWW)
    ticket = query(url)["ticket"]
    key = "%sl:%s" % (SESSION_PREFIX, hashlib.sha256(ticket.encode()).hexdigest())
    ttl = int(stack.redis.cli("PTTL", key).strip())
    assert 0 < ttl <= 30000, ttl
    stack.redis.cli("PEXPIRE", key, "1")
    time.sleep(0.05)
    assert_refused(nb, url, CERISIER_WWW)

    # the ticket of a tenant's own hop (seule: two hosts, no territory) is not a territory's
    for host in (CERISIER, EXEMPLE):
        s = Browser(port)
        f = Flow(stack, s, login="paola")
        _, hop = f.go(stack.url(SEULE_WWW, "/demarches"), stop=lambda u: is_ticket(u, SEULE_WWW, port))
        assert is_ticket(hop, SEULE_WWW, port), f.chain()
        other = Browser(port)
        other.cookies[host] = {"sesame_hop": query(hop)["n"]}
        assert_refused(other, moved(hop, host, port), host)
    # and seule, outside the territory, works as before
    h, _ = open_signed_in(stack, s, SEULE_WWW, login="paola")
    assert h["x-sesame-provider"] == ["fc-seule"]


# ---------------------------------------------------------------- single logout

def logout(stack, b, host):
    """Logs out at host through the confirmation page; returns the end-session URL."""
    page = b.get(stack.url(host, "/sesame/logout"))
    assert page.status == 200, (page.status, page.body[:300])
    m = re.search(r'name="csrf" value="([^"]+)"', page.body.decode())
    assert m, page.body.decode()[:2000]
    r = b.request("POST", stack.url(host, "/sesame/logout"), body="csrf=" + m.group(1),
                  headers=FORM)
    assert r.status == 302, (r.status, r.body[:300])
    end = r.getheader("Location")
    assert end.startswith(stack.mock.issuer + "/session/end?"), end
    return end


def session_keys(stack):
    return set(stack.redis.cli("--scan", "--pattern", SESSION_PREFIX + "s:*").split())


def test_logout_at_one_commune_ends_every_commune(stack):
    mock = stack.mock
    b = stack.browser()
    keys_before = session_keys(stack)
    open_signed_in(stack, b, ARBRE, login="karim", authorizations=1)
    for host in (CERISIER, EXEMPLE):
        open_signed_in(stack, b, host, login="karim")
    tree = {redis_key_of(SESSION_PREFIX, b.cookies[h]["sesame"])
            for h in (TERRITORY, ARBRE, CERISIER, EXEMPLE)}
    assert tree <= session_keys(stack)

    mark = mock_mark(mock)
    end = logout(stack, b, CERISIER)
    q = query(end)
    # the territory's post-logout URI, and its session's ID token
    assert q["post_logout_redirect_uri"] == stack.url(TERRITORY, "/sesame/logout/callback")
    e = harness.http_request(end, ssl_context=mock.ssl_context())
    assert e.status in (302, 303), e.status
    back = e.header("Location")
    assert back.startswith(stack.url(TERRITORY, "/sesame/logout/callback")), back
    ends = [x for x in mock.log(mark) if x.get("endpoint") == "session_end"]
    assert len(ends) == 1 and ends[0]["id_token_hint_valid"] is True, ends
    assert ends[0]["client_id"] == "agglo-fc" and ends[0]["outcome"] == "logged_out", ends
    assert ends[0]["sub"] == harness.expected_sub("agglo-fc", "karim")
    # back at the territory, then on the signed-out page of the commune left
    r = b.get(back)
    assert r.status == 303, (r.status, r.body[:300])
    assert r.getheader("Location") == stack.url(CERISIER, "/sesame/logout/callback")
    r = b.get(r.getheader("Location"))
    assert r.status == 200 and 'lang="fr"' in r.body.decode()
    assert "Mairie de Cerisier" in html.unescape(r.body.decode())

    # every session of the tree is gone from Redis, the cookies of the other hosts are dead
    assert not (tree & session_keys(stack))
    assert session_keys(stack) <= keys_before | session_keys(stack) - tree
    signed_out_everywhere(stack, b, (ARBRE, CERISIER, EXEMPLE))
    # and the next sign-in goes to the provider again
    mark = mock_mark(mock)
    open_signed_in(stack, b, EXEMPLE, login="karim", authorizations=1)
    assert len(authorizations_since(mock, mark)) == 1


def test_logout_at_the_territory_ends_every_commune(stack):
    b = stack.browser()
    open_signed_in(stack, b, EXEMPLE, login="jean", authorizations=1)
    open_signed_in(stack, b, ARBRE, login="jean")
    end = logout(stack, b, TERRITORY)
    assert query(end)["post_logout_redirect_uri"] == stack.url(TERRITORY, "/sesame/logout/callback")
    e = harness.http_request(end, ssl_context=stack.mock.ssl_context())
    r = b.get(e.header("Location"))
    assert r.status == 200 and "Agglomération d'Exemple" in html.unescape(r.body.decode())
    signed_out_everywhere(stack, b, (ARBRE, EXEMPLE))


def test_revoking_the_citizen_at_one_commune_ends_every_commune(stack):
    b = stack.browser()
    h, _ = open_signed_in(stack, b, ARBRE, login="theo", authorizations=1)
    hc, _ = open_signed_in(stack, b, CERISIER, login="theo")
    open_signed_in(stack, b, EXEMPLE, login="theo")
    account = h["x-sesame-account"][0]
    # another citizen's sessions are not touched
    other = stack.browser()
    open_signed_in(stack, other, CERISIER, login="alex", authorizations=1)

    rc, out, err = stack.tool("arbre", "arbre", "revoke", account)
    assert rc == 0, (out, err)
    n = int(re.search(r"(\d+) sessions revoked", out).group(1))
    assert n == 4, out  # arbre's, and the tree's: the territory's, cerisier's, exemple's
    signed_out_everywhere(stack, b, (ARBRE, CERISIER, EXEMPLE))
    # the territory session ended too: signing in again needs the provider
    open_signed_in(stack, b, CERISIER, login="theo", authorizations=1)
    assert identity(other.get(stack.url(CERISIER, "/demarches")))["x-sesame-family-name"]

    # revoking at cerisier (its own account id) ends the new tree as well
    rc, out, err = stack.tool("cerisier", "cerisier", "revoke", hc["x-sesame-account"][0])
    assert rc == 0, (out, err)
    signed_out_everywhere(stack, b, (CERISIER,))


# ---------------------------------------------------------------- levels and providers

def test_step_up_at_the_territory(stack):
    mock = stack.mock
    b = stack.browser()
    h, f = open_signed_in(stack, b, CERISIER, login="marie", provider="franceconnect",
                          authorizations=1)
    assert h["x-sesame-acr"] == ["eidas1"]
    assert query(f.authorizations[0])["acr_values"] == "eidas1"
    open_signed_in(stack, b, ARBRE, login="marie")

    # /fort needs eidas2: back to the territory with acr=eidas2, one more sign-in there
    before = stack.echo.stats()["requests_total"]
    r = b.get(stack.url(CERISIER, "/fort"))
    assert r.status == 302
    loc = r.getheader("Location")
    assert urllib.parse.urlsplit(loc).hostname == TERRITORY and query(loc).get("acr") == "eidas2", loc
    assert stack.echo.stats()["requests_total"] == before
    mark = mock_mark(mock)
    h, f = open_signed_in(stack, b, CERISIER, "/fort", login="marie", provider="franceconnect",
                          authorizations=1)
    assert query(f.authorizations[0])["acr_values"] == "eidas2", f.chain()
    signin = [u for u, _ in f.pages]
    assert signin and all(query(u).get("acr") == "eidas2" for u in signin), signin
    assert h["x-sesame-acr"] == ["eidas2"]
    assert len(authorizations_since(mock, mark)) == 1
    # arbre's session of the same tree is still open; a new commune opens at eidas2
    assert identity(b.get(stack.url(ARBRE, "/demarches")))["x-sesame-acr"] == ["eidas1"]
    he, _ = open_signed_in(stack, b, EXEMPLE, login="marie")
    assert he["x-sesame-acr"] == ["eidas2"]
    # the new territory session kept the tree: logging out ends arbre's older session too
    e = harness.http_request(logout(stack, b, EXEMPLE), ssl_context=mock.ssl_context())
    assert e.status in (302, 303)
    signed_out_everywhere(stack, b, (ARBRE, CERISIER, EXEMPLE))


def test_a_commune_admitting_only_another_provider_refuses_the_session(stack):
    mock = stack.mock
    port = stack.port
    b = stack.browser()
    open_signed_in(stack, b, ARBRE, login="lucie", authorizations=1)  # franceconnect
    # dunes accepts agents only: no ticket from a franceconnect territory session, the
    # territory asks to sign in with agents
    f = Flow(stack, b, login="lucie", max_authorizations=1)
    _, authorize = f.go(stack.url(DUNES, "/demarches"),
                        stop=lambda u: u.startswith(mock.issuer + "/authorize?"))
    assert not [s for s in f.steps if is_ticket(s.url, DUNES, port)], f.chain()
    assert query(authorize)["client_id"] == "agglo-agents", authorize
    # an sso URL without any provider, for dunes, still gives no ticket
    sso = [s for s in f.steps if s.host == TERRITORY and s.path == "/sesame/sso"]
    assert sso, f.chain()
    q = query(sso[0].url)
    r = b.get(stack.url(TERRITORY, "/sesame/sso?return_to=" +
                        urllib.parse.quote(q["return_to"], safe="")))
    assert r.status == 302 and not is_ticket(r.getheader("Location"), DUNES, port), \
        r.getheader("Location")
    # signing in with agents opens dunes; arbre (franceconnect only) keeps its own session
    h, f = open_signed_in(stack, b, DUNES, login="lucie", provider="agents", authorizations=1)
    assert h["x-sesame-provider"] == ["agents"]
    assert identity(b.get(stack.url(ARBRE, "/demarches")))["x-sesame-provider"] == ["franceconnect"]
    # cerisier accepts both: it opens with the territory's current (agents) session
    hc, _ = open_signed_in(stack, b, CERISIER, login="lucie")
    assert hc["x-sesame-provider"] == ["agents"]


# ---------------------------------------------------------------- expiry

def test_derived_sessions_never_outlive_the_territory_session(stack, tmp_path):
    short = Stack(str(tmp_path), name="court", extra_session="max_lifetime = 6s\ntouch_interval = 1s")
    try:
        b = short.browser()
        open_signed_in(short, b, ARBRE, login="marie", authorizations=1)
        signed_in = time.time()
        time.sleep(2.5)
        open_signed_in(short, b, CERISIER, login="marie")
        prefix = SESSION_PREFIX
        t_ttl = int(short.redis.cli("PTTL", redis_key_of(prefix, b.cookies[TERRITORY]["sesame"])))
        c_ttl = int(short.redis.cli("PTTL", redis_key_of(prefix, b.cookies[CERISIER]["sesame"])))
        assert 0 < c_ttl <= t_ttl + 200, (c_ttl, t_ttl)
        assert c_ttl < 6000 - 2000, "cerisier's session got a lifetime of its own: %d ms" % c_ttl
        time.sleep(max(0.0, signed_in + 6.5 - time.time()))
        for host in (ARBRE, CERISIER):
            assert b.get(short.url(host, "/demarches"), headers=XHR).status == 401, host
    finally:
        short.stop()


# ---------------------------------------------------------------- sesame -t

BASE_CONF = """[server]
listen = 127.0.0.1:8080

[redis]
address = 127.0.0.1:6379

[session]
secret_file = {key}

[provider franceconnect]
issuer = https://fc.example/api/v2
client_id = agglo
client_secret_file = {secret}

[provider agents]
issuer = https://agents.example
client_id = agglo-agents
client_secret_file = {secret}

[territory agglo]
public_url = https://connexion.agglo-exemple.fr
providers = franceconnect
display_name = Agglomération d'Exemple

[tenant arbre]
public_url = https://www.ville-arbre.fr
territory = agglo

[route arbre-demarches]
tenant = arbre
upstream = http://127.0.0.1:9000
"""


def conf_files(tmp_path):
    key = write_secret(str(tmp_path / "session.key"), SESSION_KEY)
    secret = write_secret(str(tmp_path / "fc.secret"), "secret-0123456789abcdef")
    return key, secret


def check(tmp_path, text):
    key, secret = conf_files(tmp_path)
    path = tmp_path / "sesame.conf"
    path.write_text(text.format(key=key, secret=secret))
    rc, out = check_config(str(path))
    return rc, out, str(path), path.read_text().splitlines()


def test_config_check_accepts_a_territory(tmp_path):
    rc, out, _, _ = check(tmp_path, BASE_CONF)
    assert rc == 0, out


def replace(old, new):
    def edit(text):
        assert old in text, old
        return text.replace(old, new, 1)
    return edit


# (edit of BASE_CONF, key, the line the message must name (the first line starting with
# it, or the n-th with (text, n)), message)
MISUSES = {
    "unknown territory": (replace("territory = agglo\n", "territory = nulle\n"), "territory",
                          "territory = nulle", r"no \[territory nulle\] section"),
    "territory without provider": (replace("providers = franceconnect\n", ""), "provider",
                                   "[territory agglo]", r"\[territory agglo\] needs a provider"),
    "member with another provider": (
        replace("territory = agglo\n", "territory = agglo\nprovider = agents\n"), "provider",
        "provider = agents", r"\[tenant arbre\] joins \[territory agglo\].*'agents'"),
    "member route with another provider": (
        replace("tenant = arbre\nupstream", "tenant = arbre\nproviders = franceconnect agents\nupstream"),
        "providers", "providers = franceconnect agents", r"\[route arbre-demarches\].*'agents'"),
    "territory host is a tenant's": (
        replace("https://www.ville-arbre.fr", "https://connexion.agglo-exemple.fr"), "hosts",
        ("public_url = https://connexion.agglo-exemple.fr", 2), r"sign-in host of a territory"),
    "unknown key": (replace("display_name = Agglomération d'Exemple", "hosts = a.fr"), "hosts",
                    "hosts = a.fr", r"unknown key in \[territory\]"),
    "bad colour": (replace("display_name = Agglomération d'Exemple", "accent_color = rouge"),
                   "accent_color", "accent_color = rouge", r"#RRGGBB"),
    "no public_url": (replace("public_url = https://connexion.agglo-exemple.fr\n", ""),
                      "public_url", "[territory agglo]", r"\[territory agglo\] needs public_url"),
    "twice": (replace("[tenant arbre]", "[territory agglo]\n\n[tenant arbre]"), "territory",
              ("[territory agglo]", 2), r"defined twice"),
    "route of the territory": (replace("tenant = arbre\nupstream", "tenant = @agglo\nupstream"),
                               "tenant", "tenant = @agglo", r"no \[tenant @agglo\] section"),
}


@pytest.mark.parametrize("case", sorted(MISUSES))
def test_config_check_refuses_territory_misuse(tmp_path, case):
    edit, key, where, message = MISUSES[case]
    rc, out, path, lines = check(tmp_path, edit(BASE_CONF))
    assert rc == 1, out
    text, nth = where if isinstance(where, tuple) else (where, 1)
    line = [i + 1 for i, l in enumerate(lines) if l.startswith(text)][nth - 1]
    wanted = re.compile(r"^%s:%d: %s: .*%s" % (re.escape(path), line, re.escape(key), message))
    assert any(wanted.search(l) for l in out.splitlines()), (case, line, out)
