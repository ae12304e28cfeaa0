"""Sign-in with the mock FranceConnect end to end, sessions in a real Redis,
identity passed to the echo upstream, logout, misbehaving providers."""

import html
import json
import re
import time
import urllib.parse

import pytest

import signin_env  # noqa: F401  (puts tests/mockfc on sys.path)
import harness  # noqa: E402
from signin_env import Browser, Stack, echoed, sign_in

IDENTITIES = [i["login"] for i in harness.load_identities() if i["login"] != "desactive"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(str(tmp_path_factory.mktemp("signin")))
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def reset_mock(stack):
    stack.mock.scenario("none")
    yield
    stack.mock.scenario("none")


def test_xhr_gets_401_not_redirect(stack):
    b = stack.browser()
    r = b.get("http://ville-a.localhost:%d/demarches" % stack.port,
              headers={"Accept": "application/json", "Sec-Fetch-Mode": "cors"})
    assert r.status == 401
    assert json.loads(r.body)["status"] == 401
    r = b.get("http://ville-a.localhost:%d/demarches" % stack.port,
              headers={"X-Requested-With": "XMLHttpRequest"})
    assert r.status == 401


@pytest.mark.parametrize("login", IDENTITIES)
def test_every_identity_signs_in(stack, login):
    before = stack.echo.stats()["requests_total"]
    b = stack.browser()
    r, _ = sign_in(b, stack.mock, stack.port, login)
    # nothing reached the upstream before the sign-in completed
    assert stack.echo.stats()["requests_total"] == before
    assert r.status == 303, r.body[:500]
    assert r.getheader("Location") == "/demarches"
    assert "sesame" in b.cookies["ville-a.localhost"]
    r = b.get("http://ville-a.localhost:%d/demarches" % stack.port)
    assert r.status == 200
    h = echoed(r.body)["h"]
    ident = [i for i in harness.load_identities() if i["login"] == login][0]
    assert h["x-sesame-account"][0]
    assert urllib.parse.unquote(h["x-sesame-family-name"][0]) == ident["family_name"]
    assert urllib.parse.unquote(h["x-sesame-given-name"][0]) == ident["given_name"]
    assert h["x-sesame-birthdate"] == [ident["birthdate"]]
    assert h["x-sesame-acr"] == ["eidas1"]
    # the route releases only the claims it lists
    assert "x-sesame-email" not in h and "x-sesame-gender" not in h
    # the session cookie does not reach the upstream
    assert "sesame=" not in ";".join(h.get("cookie", []))
    # a second route of the tenant, without signing in again
    r = b.get("http://ville-a.localhost:%d/cantine/menu" % stack.port)
    assert r.status == 200
    h = echoed(r.body)["h"]
    assert "x-sesame-given-name" in h and "x-sesame-family-name" not in h
    # another host name of the same tenant shares the session (host-only
    # cookies are per host name: the browser sends it when the domain matches)
    b.cookies["www.ville-a.localhost"] = dict(b.cookies["ville-a.localhost"])
    r = b.get("http://www.ville-a.localhost:%d/demarches" % stack.port)
    assert r.status == 200


def test_percent_encoded_accents(stack):
    b = stack.browser()
    sign_in(b, stack.mock, stack.port, "jean")
    r = b.get("http://ville-a.localhost:%d/demarches" % stack.port)
    h = echoed(r.body)["h"]
    assert h["x-sesame-family-name"] == ["D%27ALMEIDA-L%C3%89V%C3%8AQUE"]


def test_disabled_identity_gets_provider_error_page(stack):
    b = stack.browser()
    r, _ = sign_in(b, stack.mock, stack.port, "desactive")
    assert r.status in (401, 403)
    assert 'lang="fr"' in r.body.decode()
    assert "sesame" not in b.cookies.get("ville-a.localhost", {})


def test_spoofed_identity_headers_never_arrive(stack):
    b = stack.browser()
    sign_in(b, stack.mock, stack.port, "marie")
    for path in ["/demarches", "/", "/optionnel"]:
        r = b.get("http://ville-a.localhost:%d%s" % (stack.port, path),
                  headers={"X-Sesame-Account": "admin", "x-sesame-account": "root",
                           "X_Sesame_Acr": "eidas3", "X-SESAME-GIVEN-NAME": "Mallory"})
        h = echoed(r.body)["h"]
        assert "admin" not in h.get("x-sesame-account", [])
        assert "root" not in h.get("x-sesame-account", [])
        assert "Mallory" not in h.get("x-sesame-given-name", [])
        assert all(not k.startswith("x_sesame") for k in h)


def test_optional_route_passes_identity_when_signed_in(stack):
    b = stack.browser()
    r = b.get("http://ville-a.localhost:%d/optionnel" % stack.port)
    assert r.status == 200 and "x-sesame-account" not in echoed(r.body)["h"]
    sign_in(b, stack.mock, stack.port, "marie")
    r = b.get("http://ville-a.localhost:%d/optionnel" % stack.port)
    assert "x-sesame-account" in echoed(r.body)["h"]


def test_minor_refused_on_adults_only_route(stack):
    b = stack.browser()
    sign_in(b, stack.mock, stack.port, "lucie")
    r = b.get("http://ville-a.localhost:%d/adultes" % stack.port)
    assert r.status == 403
    assert "réservé aux personnes majeures" in r.body.decode()
    b2 = stack.browser()
    sign_in(b2, stack.mock, stack.port, "marie")
    assert b2.get("http://ville-a.localhost:%d/adultes" % stack.port).status == 200


def test_acr_step_up_asks_higher_level(stack):
    b = stack.browser()
    sign_in(b, stack.mock, stack.port, "marie")
    r = b.get("http://ville-a.localhost:%d/fort" % stack.port)
    assert r.status == 302
    assert "acr=eidas2" in r.getheader("Location")


def test_me_endpoint(stack):
    b = stack.browser()
    r = b.get("http://ville-a.localhost:%d/sesame/me" % stack.port)
    assert r.status == 401
    sign_in(b, stack.mock, stack.port, "paola")
    r = b.get("http://ville-a.localhost:%d/sesame/me" % stack.port)
    assert r.status == 200
    j = json.loads(r.body)
    assert j["account"] and j["claims"]["family_name"] == "SANTUCCI"
    assert j["attributes"] == {}


def test_tenant_isolation(stack):
    b = stack.browser()
    sign_in(b, stack.mock, stack.port, "marie")
    b.cookies["ville-b.localhost"] = dict(b.cookies["ville-a.localhost"])
    r = b.get("http://ville-b.localhost:%d/" % stack.port)
    assert r.status == 302, "a session of ville-a must not be accepted by ville-b"


def test_session_not_readable_in_redis_and_tampered_cookie_refused(stack):
    b = stack.browser()
    sign_in(b, stack.mock, stack.port, "theo")
    keys = stack.redis.cli("--scan").split()
    dump = "".join(stack.redis.cli("GET", k) for k in keys if ":s:" in k)
    assert dump, keys
    assert "PAYET" not in dump and "Théo" not in dump and "97411" not in dump
    cookie = b.cookies["ville-a.localhost"]["sesame"]
    assert cookie not in "".join(keys)
    flipped = cookie[:-1] + ("A" if cookie[-1] != "A" else "B")
    b.cookies["ville-a.localhost"]["sesame"] = flipped
    r = b.get("http://ville-a.localhost:%d/demarches" % stack.port)
    assert r.status == 302


def test_open_redirect_return_to_ignored(stack):
    b = stack.browser()
    base = "http://ville-a.localhost:%d" % stack.port
    for evil in ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"]:
        r = b.get(base + "/sesame/login?return_to=" + urllib.parse.quote(evil, safe=""))
        assert r.status == 302
        authorize = r.getheader("Location")
        stack.mock.autologin("marie")
        a = harness.http_request(authorize, ssl_context=stack.mock.ssl_context())
        r = b.get(a.header("Location"))
        assert r.status == 303
        assert r.getheader("Location") == "/", (evil, r.getheader("Location"))


def test_state_is_single_use_and_bound_to_browser(stack):
    b = stack.browser()
    r, callback = sign_in(b, stack.mock, stack.port, "marie")
    assert r.status == 303
    again = b.get(callback)
    assert again.status == 400
    # another browser (no binding cookie) cannot use a fresh callback
    b1 = stack.browser()
    base = "http://ville-a.localhost:%d" % stack.port
    r = b1.get(base + "/sesame/login?return_to=%2Fdemarches")
    stack.mock.autologin("marie")
    a = harness.http_request(r.getheader("Location"), ssl_context=stack.mock.ssl_context())
    thief = stack.browser()
    r = thief.get(a.header("Location"))
    assert r.status == 400
    assert "sesame" not in thief.cookies.get("ville-a.localhost", {})


def test_many_tabs_start_logins_concurrently(stack):
    b = stack.browser()
    base = "http://ville-a.localhost:%d" % stack.port
    authorizes = []
    for i in range(5):
        r = b.get(base + "/sesame/login?return_to=%2Fdemarches%3Ftab%3D" + str(i))
        assert r.status == 302
        authorizes.append(r.getheader("Location"))
    assert len(b.cookies["ville-a.localhost"]) == 1  # one binding cookie, not five
    for i, authorize in enumerate(reversed(authorizes)):
        stack.mock.autologin("marie")
        a = harness.http_request(authorize, ssl_context=stack.mock.ssl_context())
        r = b.get(a.header("Location"))
        assert r.status == 303
        assert r.getheader("Location") == "/demarches?tab=%d" % (4 - i)


SCENARIOS = ["bad_signature", "wrong_iss", "wrong_aud", "expired", "iat_future", "iat_old",
             "missing_sub", "missing_iat", "missing_nonce", "wrong_nonce", "alg_none",
             "hs256_pubkey", "unknown_kid", "userinfo_sub_mismatch", "userinfo_unsigned",
             "token_error"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_misbehaving_provider_refused(stack, scenario):
    before = stack.echo.stats()["requests_total"]
    stack.mock.scenario(scenario)
    b = stack.browser()
    r, _ = sign_in(b, stack.mock, stack.port, "marie")
    assert r.status in (401, 503), (scenario, r.status)
    assert 'lang="fr"' in r.body.decode()
    assert "sesame" not in b.cookies.get("ville-a.localhost", {})
    assert stack.echo.stats()["requests_total"] == before
    r = b.get("http://ville-a.localhost:%d/demarches" % stack.port)
    assert r.status == 302


def test_duplicate_callback_parameters_refused(stack):
    stack.mock.scenario("duplicate_params")
    b = stack.browser()
    r, _ = sign_in(b, stack.mock, stack.port, "marie")
    assert r.status == 400
    assert "sesame" not in b.cookies.get("ville-a.localhost", {})


def test_wrong_iss_parameter_refused(stack):
    stack.mock.scenario("wrong_iss_param")
    b = stack.browser()
    r, _ = sign_in(b, stack.mock, stack.port, "marie")
    assert r.status == 400


@pytest.mark.parametrize("error", ["access_denied", "invalid_scope", "server_error",
                                   "temporarily_unavailable", "invalid_acr", "autre_chose"])
def test_provider_error_pages(stack, error):
    stack.mock.scenario("error_redirect", error=error)
    b = stack.browser()
    r, _ = sign_in(b, stack.mock, stack.port, "marie")
    text = html.unescape(r.body.decode())
    assert r.status >= 400
    assert 'lang="fr"' in text and "/sesame/login" in text  # a retry link
    assert error not in text or error == "autre_chose"


def test_key_rotation_accepted(stack):
    b = stack.browser()
    time.sleep(1.2)  # past jwks_refetch_interval since any earlier refetch
    stack.mock.scenario("rotate_keys")
    r, _ = sign_in(b, stack.mock, stack.port, "marie")
    assert r.status == 303
    # the new key is kept: the next sign-in needs no refetch
    stack.mock.scenario("none")
    r, _ = sign_in(stack.browser(), stack.mock, stack.port, "jean")
    assert r.status == 303


def test_logout(stack):
    b = stack.browser()
    r, _ = sign_in(b, stack.mock, stack.port, "marie")
    assert r.status == 303
    old = dict(b.cookies["ville-a.localhost"])
    base = "http://ville-a.localhost:%d" % stack.port
    page = b.get(base + "/sesame/logout")
    assert page.status == 200
    m = re.search(r'name="csrf" value="([^"]+)"', page.body.decode())
    assert m, page.body.decode()[:3000]
    # a forged POST without the token is refused and signs nobody out
    r = b.request("POST", base + "/sesame/logout", body="csrf=nope",
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 403
    assert b.get(base + "/demarches").status == 200
    r = b.request("POST", base + "/sesame/logout", body="csrf=" + m.group(1),
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 302
    end = r.getheader("Location")
    assert end.startswith(stack.mock.issuer + "/session/end?")
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(end).query)
    assert q["post_logout_redirect_uri"] == ["%s/sesame/logout/callback" % base]
    assert len(q["state"][0]) >= 32
    e = harness.http_request(end, ssl_context=stack.mock.ssl_context())
    assert e.status in (302, 303)
    back = e.header("Location")
    assert back.startswith(base + "/sesame/logout/callback")
    log = [l for l in stack.mock.log() if l.get("endpoint") == "session_end"]
    assert log and log[-1].get("id_token_hint_valid") is True
    r = b.get(back)
    assert r.status == 200 and 'lang="fr"' in r.body.decode()
    # the old cookie is dead
    b2 = Browser(stack.port)
    b2.cookies["ville-a.localhost"] = old
    assert b2.get(base + "/demarches").status == 302


def test_logout_callback_tolerates_missing_state(stack):
    b = stack.browser()
    r = b.get("http://ville-a.localhost:%d/sesame/logout/callback" % stack.port)
    assert r.status == 200


def test_second_instance_accepts_same_cookie(stack):
    from sesame_env import Sesame, free_port
    b = stack.browser()
    r, _ = sign_in(b, stack.mock, stack.port, "karim")
    assert r.status == 303
    port2 = free_port()
    import os
    tmp2 = os.path.join(stack.tmp, "second")
    os.makedirs(tmp2, exist_ok=True)
    text = stack.conf_text().replace("listen = 127.0.0.1:%d" % stack.port, "listen = 127.0.0.1:%d" % port2)
    text = text.replace("%s/sesame-" % stack.tmp, "%s/sesame-" % tmp2)
    gw2 = Sesame(tmp2, text, port=port2)
    try:
        b2 = Browser(port2)
        b2.cookies = {"ville-a.localhost": dict(b.cookies["ville-a.localhost"])}
        r = b2.get("http://ville-a.localhost:%d/demarches" % port2)
        assert r.status == 200
        assert echoed(r.body)["h"]["x-sesame-family-name"] == ["BENALI"]
        # logout on an instance that never talked to the provider still reaches
        # the provider's end-session endpoint (metadata fetched on demand)
        base2 = "http://ville-a.localhost:%d" % port2
        page = b2.get(base2 + "/sesame/logout")
        token = re.search(r'name="csrf" value="([^"]+)"', page.body.decode()).group(1)
        r = b2.request("POST", base2 + "/sesame/logout", body="csrf=" + token,
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status == 302
        assert r.getheader("Location").startswith(stack.mock.issuer + "/session/end?")
        assert b.get("http://ville-a.localhost:%d/demarches" % stack.port).status == 302
    finally:
        gw2.stop()


def test_slow_token_endpoint_times_out(stack):
    stack.mock.scenario("token_slow")
    b = stack.browser()
    start = time.time()
    r, _ = sign_in(b, stack.mock, stack.port, "marie")
    elapsed = time.time() - start
    assert r.status == 503, r.status
    assert elapsed < 6, "the provider call must stop at http_timeout (2s)"
    assert "sesame" not in b.cookies.get("ville-a.localhost", {})


def test_reload_keeps_sessions_and_sign_in_working(stack):
    b = stack.browser()
    r, _ = sign_in(b, stack.mock, stack.port, "marie")
    assert r.status == 303
    base = "http://ville-a.localhost:%d" % stack.port
    before = stack.gw.errors().count("configuration reloaded")
    # a changed configuration: the workers build a new Redis client and
    # session store and retire the old ones
    stack.gw.write_conf(stack.conf_text(extra_session="cache_ttl = 1s"))
    stack.gw.reload()
    deadline = time.time() + 5
    while stack.gw.errors().count("configuration reloaded") == before and time.time() < deadline:
        time.sleep(0.05)
    assert stack.gw.errors().count("configuration reloaded") == before + 1
    for _ in range(6):  # both workers
        assert b.get(base + "/demarches").status == 200
    r, _ = sign_in(stack.browser(), stack.mock, stack.port, "jean")
    assert r.status == 303
    stack.gw.write_conf(stack.conf_text())
    stack.gw.reload()
