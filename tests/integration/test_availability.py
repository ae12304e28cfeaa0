"""Provider availability with the real mock FranceConnect: stopped, the
sign-in page says so in French within seconds and <prefix>login answers the
503 page instead of sending the citizen to it; restarted on the same port,
sign-in works again without restarting Sésame. Metadata and keys refresh in
the background."""

import html
import os
import re
import time

import pytest

import signin_env  # noqa: F401  (puts tests/mockfc on sys.path)
import harness  # noqa: E402
from sesame_env import Echo, Redis, Sesame, free_port
from signin_env import Browser, clients_for, sign_in

UNAVAILABLE = "FranceConnect est momentanément indisponible"


def conf_text(tmp, port, redis_port, mock, echo_url, probe="1s", refresh="1h"):
    key = os.path.join(tmp, "session.key")
    with open(key, "w") as f:
        f.write("c2Vzc2lvbi1rZXktZm9yLXRlc3RzLW9ubHktMDEyMzQ1Njc4OQ==\n")
    os.chmod(key, 0o600)
    secret = os.path.join(tmp, "a.secret")
    with open(secret, "w") as f:
        f.write(signin_env.CLIENTS[0]["client_secret"] + "\n")
    os.chmod(secret, 0o600)
    return """
[server]
listen = 127.0.0.1:{port}
workers = 2
error_log = {tmp}/sesame-error.log
access_log = {tmp}/sesame-access.log
log_level = debug

[redis]
address = 127.0.0.1:{redis_port}

[session]
secret_file = {key}

[provider franceconnect]
issuer = {issuer}
client_id = ville-a-client
client_secret_file = {secret}
ca_file = {ca}
http_timeout = 2s
jwks_refetch_interval = 1s
probe_interval = {probe}
discovery_refresh = {refresh}

[tenant ville-a]
display_name = Ville d'Arbre
hosts = ville-a.localhost
public_url = http://ville-a.localhost:{port}
provider = franceconnect

[route a-home]
tenant = ville-a
path = /
upstream = {echo}
access = public

[route a-demarches]
tenant = ville-a
path = /demarches
upstream = {echo}
claims = given_name family_name
""".format(port=port, tmp=tmp, redis_port=redis_port, key=key, issuer=mock.issuer,
           secret=secret, ca=mock.ca_file, echo=echo_url, probe=probe, refresh=refresh)


class Env:
    def __init__(self, tmp, **conf_kw):
        self.tmp = tmp
        self.port = free_port()
        self.mock_port = free_port()
        self.redis = Redis(tmp)
        self.mock = self.start_mock()
        self.echo = Echo(tmp)
        self.gw = Sesame(tmp, conf_text(tmp, self.port, self.redis.port, self.mock, self.echo.url,
                                        **conf_kw), port=self.port)

    def start_mock(self):
        # the same port and PKI each time: the same issuer, the same CA
        return harness.start_mockfc(os.path.join(self.tmp, "mock"), clients_for(self.port),
                                    port=self.mock_port,
                                    pki_dir=os.path.join(self.tmp, "pki"))

    def signin_page(self):
        b = Browser(self.port)
        r = b.get("http://ville-a.localhost:%d/sesame/signin?return_to=%%2Fdemarches" % self.port)
        assert r.status == 200, r.status
        return r, html.unescape(r.body.decode())

    def wait_page(self, unavailable, timeout):
        deadline = time.monotonic() + timeout
        while True:
            r, text = self.signin_page()
            if (UNAVAILABLE in text) == unavailable:
                return r, text
            if time.monotonic() > deadline:
                raise AssertionError("sign-in page still %s after %ss:\n%s"
                                     % ("available" if unavailable else "unavailable", timeout,
                                        text[:3000]))
            time.sleep(0.1)

    def stop(self):
        for p in (self.gw, self.echo, self.mock, self.redis):
            try:
                p.stop()
            except Exception:  # noqa: BLE001
                pass


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = Env(str(tmp_path_factory.mktemp("availability")))
    yield e
    e.stop()


def test_provider_down_then_back_without_restart(env):
    # available: the button leads to the provider
    r, text = env.wait_page(unavailable=False, timeout=10)
    assert UNAVAILABLE not in text and 'class="fc-button"' in text
    assert r.getheader("Refresh") is None
    r, _ = sign_in(Browser(env.port), env.mock, env.port, "marie")
    assert r.status == 303, r.body[:500]

    env.mock.stop()
    started = time.monotonic()
    r, text = env.wait_page(unavailable=True, timeout=8)
    took = time.monotonic() - started
    assert took < 5, "unavailability shown after %.1f s" % took
    # no FranceConnect button, a "Réessayer" link that starts the sign-in
    # again, and the page reloads itself (no script)
    assert 'class="fc-button"' not in text, text[:3000]
    assert re.search(r'<a class="button secondary" href="/sesame/login\?return_to=%2Fdemarches'
                     r'&provider=franceconnect">Réessayer</a>', text), text[:3000]
    assert r.getheader("Refresh") == "30"
    assert 'lang="fr"' in text

    # a sign-in started anyway (an old tab, sign_in_page = off) gets the 503
    # page, never a redirect to the dead provider; nothing is stored
    b = Browser(env.port)
    before = env.redis.cli("DBSIZE").strip()
    r = b.get("http://ville-a.localhost:%d/sesame/login?return_to=%%2Fdemarches" % env.port)
    assert r.status == 503, r.status
    assert r.getheader("Location") is None
    assert r.getheader("Retry-After") == "15"
    assert UNAVAILABLE in html.unescape(r.body.decode())
    assert env.redis.cli("DBSIZE").strip() == before
    assert "sesame_login" not in b.cookies.get("ville-a.localhost", {})
    # it asked the provider again rather than trusting what it knew
    assert "provider franceconnect: unavailable (discovery unreachable" in env.gw.errors()
    # a route needing sign-in still sends the browser to the sign-in page,
    # which says why
    r = b.get("http://ville-a.localhost:%d/demarches" % env.port)
    assert r.status == 302 and "/sesame/signin?" in r.getheader("Location")

    errors = env.gw.errors()
    assert "provider franceconnect unavailable" in errors
    # probes of a provider known to be down do not flood the log
    time.sleep(2.5)
    errors = env.gw.errors()
    assert errors.count("provider franceconnect unavailable: its last 2 calls failed") == 1
    assert errors.count("metadata refresh failed") <= 2, errors[-3000:]

    # back on the same port (new signing keys): offered again by itself
    env.mock = env.start_mock()
    started = time.monotonic()
    r, text = env.wait_page(unavailable=False, timeout=8)
    took = time.monotonic() - started
    assert took < 5, "back after %.1f s" % took
    assert 'class="fc-button"' in text and r.getheader("Refresh") is None
    r, _ = sign_in(Browser(env.port), env.mock, env.port, "jean")
    assert r.status == 303, r.body[:500]
    assert "provider franceconnect available again" in env.gw.errors()


def test_provider_answering_5xx_is_unavailable(env):
    env.wait_page(unavailable=False, timeout=10)
    env.mock.scenario("discovery_down")  # 503 on discovery and JWKS
    try:
        env.wait_page(unavailable=True, timeout=8)
        b = Browser(env.port)
        r = b.get("http://ville-a.localhost:%d/sesame/login" % env.port)
        assert r.status == 503
    finally:
        env.mock.scenario("none")
    env.wait_page(unavailable=False, timeout=8)
    r, _ = sign_in(Browser(env.port), env.mock, env.port, "marie")
    assert r.status == 303


def test_token_endpoint_failures_count(env):
    """Failed token calls (5xx) count as well: after two in a row the
    provider is unavailable until a probe succeeds, which is at once here."""
    env.wait_page(unavailable=False, timeout=10)
    env.mock.scenario("token_error")
    try:
        for login in ("marie", "jean"):
            r, _ = sign_in(Browser(env.port), env.mock, env.port, login)
            assert r.status == 503, r.status
    finally:
        env.mock.scenario("none")
    assert env.gw.errors().count("its last 2 calls failed (token endpoint") >= 1
    env.wait_page(unavailable=False, timeout=8)


def test_background_refresh_before_expiry(tmp_path):
    """With discovery_refresh = 2s and no probe, metadata and keys are
    fetched again in the background (at 75 to 90 % of it), with nobody
    signing in."""
    e = Env(str(tmp_path), probe="0s", refresh="2s")
    try:
        time.sleep(0.5)
        since = e.mock.log()[-1]["seq"] if e.mock.log() else 0
        time.sleep(4.5)
        log = e.mock.log(since)
        disc = [l for l in log if l.get("endpoint") == "discovery"]
        jwks = [l for l in log if l.get("endpoint") == "jwks"]
        # one refresh every 1.5 to 1.8 s: two or three in 4.5 s, never more
        assert 2 <= len(disc) <= 3, [(l["endpoint"], l["time"]) for l in log]
        assert 2 <= len(jwks) <= 3, [(l["endpoint"], l["time"]) for l in log]
        # and before they expire: a sign-in never waits for a fetch
        r, _ = sign_in(Browser(e.port), e.mock, e.port, "marie")
        assert r.status == 303
    finally:
        e.stop()
