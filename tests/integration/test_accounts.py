"""Local citizen accounts end to end, with real processes (accounts_env.py):
the redis plugin (create, pivot linking of pre-registered citizens, homonyms,
link-only and deny policies, erasure with sesame-accounts), the http plugin
against hmac_server.py, the identity sent to upstreams (claims per route,
header encodings, the signed assertion checked against /sesame/jwks.json),
and `sesame -t` refusing a plugin of another ABI version."""

import base64
import html
import json
import os
import re
import subprocess
import time

import pytest

import accounts_env as env
from accounts_env import AccountsStack, b64url_decode, identity, provider, sub_of
from sesame_env import check_config, sesame_binary


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = AccountsStack(str(tmp_path_factory.mktemp("accounts")))
    yield s
    s.stop()


def sesame_headers(h):
    return {k for k in h if k.startswith("x-sesame-")}


def page_text(r):
    return html.unescape(r.body.decode("utf-8"))


def session_keys(stack):
    return set(stack.redis.cli("--scan", "--pattern", env.SESSION_PREFIX + "s:*").split())


def assert_refused_without_session(stack, b, tenant, r, before, status):
    """The callback answered `status` with a French page, set no session
    cookie, stored no session, and nothing reached the upstream. `before` is
    (upstream request count, session keys) taken before the sign-in."""
    assert r.status == status, (r.status, r.body[:500])
    text = page_text(r)
    assert 'lang="fr"' in text
    assert stack.session_cookie(b, tenant) is None
    assert not any(v.startswith("sesame=") for k, v in r.getheaders()
                   if k.lower() == "set-cookie")
    assert session_keys(stack) == before[1]
    before = before[0]
    assert stack.upstream_requests() == before
    # still signed out: the route sends to sign-in, the upstream sees nothing
    assert stack.get(b, tenant, "/demarches").status == 302
    assert stack.upstream_requests() == before
    return text


# ---------------------------------------------------------------- 1. create

def test_first_sign_in_creates_account_second_finds_it(stack):
    b = stack.browser()
    r = stack.sign_in(b, "creer", "marie")
    assert r.status == 303, r.body[:500]
    assert stack.session_cookie(b, "creer")
    account = stack.echoed_headers(b, "creer", "/demarches")["x-sesame-account"]
    assert len(account) == 1
    account = account[0]
    sub = sub_of("creer", "marie")
    # a local id, not the provider's identifier
    assert account and account != sub and sub not in account
    rc, out, err = stack.tool("cree", "creer", "show", account)
    assert rc == 0, err
    lines = out.splitlines()
    assert "id: %s" % account in lines
    assert "origin: created" in lines
    assert "  %s:%s" % (provider("creer"), sub) in lines
    assert "sessions: 1" in lines
    rc, out, err = stack.tool("cree", "creer", "find-sub", provider("creer"), sub)
    assert (rc, out) == (0, account + "\n"), err

    assert account_records(stack, "creer") >= {account}

    # the second sign-in (another browser) finds the same account, and
    # creates none
    records = account_records(stack, "creer")
    b2 = stack.browser()
    assert stack.sign_in(b2, "creer", "marie").status == 303
    assert stack.echoed_headers(b2, "creer", "/demarches")["x-sesame-account"] == [account]
    assert account_records(stack, "creer") == records
    rc, out, err = stack.tool("cree", "creer", "show", account)
    assert "sessions: 2" in out.splitlines()

    # another person gets another account
    b3 = stack.browser()
    assert stack.sign_in(b3, "creer", "alex").status == 303
    other = stack.echoed_headers(b3, "creer", "/demarches")["x-sesame-account"][0]
    assert other != account
    assert account_records(stack, "creer") == records | {other}


def account_records(stack, tenant):
    """Ids of the tenant's account records in Redis (redis plugin layout:
    PREFIX acct:TENANT:id:ID)."""
    pattern = "%sacct:%s:id:" % (env.ACCOUNT_PREFIX, tenant)
    keys = stack.redis.cli("--scan", "--pattern", pattern + "*").split()
    return {k[len(pattern):] for k in keys}


# ---------------------------------------------------------------- 2. pivot

PIVOT_CSV = """\ufefffamily_name,given_name,birthdate,birthplace,birthcountry,account_id,attributes
# pré-inscrits par la mairie de Pivot
MARTIN,Marie Claire Odile,1962-08-24,75107,99100,marie-001,abonne=oui,quartier=Centre
"D'ALMEIDA LEVEQUE","JEAN BAPTISTE",1979-03-02,33063,99100,jean-002,abonne=non
BERNARD,Pierre,1970-04-12,31555,99100,pierre-a,abonne=oui
BERNARD,Pierre,1970-04-12,67482,99100,pierre-b,abonne=oui
"""


@pytest.fixture(scope="module")
def preregistered(stack):
    rc, out, err = stack.tool("preinscrits", "pivot", "import",
                              stack.write_csv("pivot.csv", PIVOT_CSV))
    assert rc == 0, err
    assert "imported 4 accounts into tenant pivot" in out
    return stack


def test_preregistered_citizen_linked_by_pivot(preregistered):
    stack = preregistered
    b = stack.browser()
    assert stack.sign_in(b, "pivot", "marie").status == 303
    h = stack.echoed_headers(b, "pivot", "/demarches")
    assert h["x-sesame-account"] == ["marie-001"]
    assert h["x-sesame-family-name"] == ["MARTIN"]
    # the attribute from the commune's file opens the route
    r = stack.get(b, "pivot", "/mediatheque")
    assert r.status == 200
    assert echoed_account(r) == "marie-001"
    # the sub is now linked to the pre-registered record
    rc, out, err = stack.tool("preinscrits", "pivot", "find-sub", provider("pivot"),
                              sub_of("pivot", "marie"))
    assert (rc, out) == (0, "marie-001\n"), err
    rc, out, err = stack.tool("preinscrits", "pivot", "show", "marie-001")
    lines = out.splitlines()
    assert "origin: import" in lines and "links: 1" in lines
    assert "  abonne=oui" in lines
    # the second sign-in finds the same record (by sub now)
    b2 = stack.browser()
    assert stack.sign_in(b2, "pivot", "marie").status == 303
    assert stack.echoed_headers(b2, "pivot", "/demarches")["x-sesame-account"] == ["marie-001"]


def echoed_account(r):
    return env.echoed(r.body)["h"]["x-sesame-account"][0]


def test_accents_and_case_normalised_attribute_refused(preregistered):
    stack = preregistered
    b = stack.browser()
    assert stack.sign_in(b, "pivot", "jean").status == 303
    assert stack.echoed_headers(b, "pivot", "/demarches")["x-sesame-account"] == ["jean-002"]
    # abonne=non: the condition refuses, with the route's words, in French
    before = stack.upstream_requests()
    r = stack.get(b, "pivot", "/mediatheque")
    assert r.status == 403
    text = page_text(r)
    assert 'lang="fr"' in text
    assert "La médiathèque est réservée à ses abonnés." in text
    assert stack.upstream_requests() == before


def test_homonyms_never_linked_to_each_others_record(preregistered):
    stack = preregistered
    sub1, sub2 = sub_of("pivot", "pierre1"), sub_of("pivot", "pierre2")
    # pierre-a and pierre-b share names and birthdate: neither is linked
    # automatically, whoever signs in first
    for login in ("pierre1", "pierre2"):
        b = stack.browser()
        before = stack.upstream_requests(), session_keys(stack)
        r = stack.sign_in(b, "pivot", login)
        text = assert_refused_without_session(stack, b, "pivot", r, before, 403)
        assert "Aucun compte à votre nom" in text
    for sub in (sub1, sub2):
        rc, out, err = stack.tool("preinscrits", "pivot", "find-sub", provider("pivot"), sub)
        assert rc == 3, (out, err)
    for acct in ("pierre-a", "pierre-b"):
        rc, out, err = stack.tool("preinscrits", "pivot", "show", acct)
        assert "links: 0" in out.splitlines(), out
    # an agent links pierre1 by hand; pierre2 still gets nothing of pierre-a
    rc, out, err = stack.tool("preinscrits", "pivot", "link", "pierre-a", provider("pivot"), sub1)
    assert rc == 0, err
    b1 = stack.browser()
    assert stack.sign_in(b1, "pivot", "pierre1").status == 303
    assert stack.echoed_headers(b1, "pivot", "/demarches")["x-sesame-account"] == ["pierre-a"]
    b2 = stack.browser()
    before = stack.upstream_requests(), session_keys(stack)
    r = stack.sign_in(b2, "pivot", "pierre2")
    assert_refused_without_session(stack, b2, "pivot", r, before, 403)
    rc, out, err = stack.tool("preinscrits", "pivot", "show", "pierre-b")
    assert "links: 0" in out.splitlines()
    # a sub already linked cannot be moved to the homonym's record
    rc, out, err = stack.tool("preinscrits", "pivot", "link", "pierre-b", provider("pivot"), sub1)
    assert rc == 1 and "already linked to another account" in err


# ---------------------------------------------------------------- 3. policies

def test_link_only_unknown_person_gets_no_account_page(stack):
    b = stack.browser()
    before = stack.upstream_requests(), session_keys(stack)
    r = stack.sign_in(b, "pivot", "theo")
    text = assert_refused_without_session(stack, b, "pivot", r, before, 403)
    assert "Aucun compte à votre nom" in text
    assert "mairie" in text and "obtenir" in text  # explains how to get an account
    assert "Ville de Pivot" in text
    # nothing was created for theo
    keys = stack.redis.cli("--scan", "--pattern", "*").split()
    assert not any(sub_of("pivot", "theo") in k for k in keys)


def test_deny_policy(stack):
    b = stack.browser()
    before = stack.upstream_requests(), session_keys(stack)
    r = stack.sign_in(b, "refus", "karim")
    text = assert_refused_without_session(stack, b, "refus", r, before, 403)
    assert "Aucun compte à votre nom" not in text
    assert "ne vous a pas ouvert l'accès" in text
    keys = stack.redis.cli("--scan", "--pattern", env.ACCOUNT_PREFIX + "*refus*").split()
    assert keys == []


# ---------------------------------------------------------------- 4. erasure

def test_erasure_removes_account_indexes_and_sessions(stack):
    csv = "SANTUCCI,Paola Maria,1990-01-09,2A004,99100,paola-004,quartier=Port\n"
    rc, out, err = stack.tool("preinscrits", "pivot", "import", stack.write_csv("paola.csv", csv))
    assert rc == 0, err
    browsers = [stack.browser(), stack.browser()]
    for b in browsers:
        assert stack.sign_in(b, "pivot", "paola").status == 303
        assert stack.echoed_headers(b, "pivot", "/demarches")["x-sesame-account"] == ["paola-004"]
    rc, out, err = stack.tool("preinscrits", "pivot", "show", "paola-004")
    assert "sessions: 2" in out.splitlines()
    before = set(stack.redis.cli("--scan", "--pattern", "*").split())
    assert any("paola-004" in k for k in before)

    rc, out, err = stack.tool("preinscrits", "pivot", "delete", "paola-004")
    assert (rc, out) == (0, "account paola-004 deleted, 2 sessions revoked\n"), err

    # the cookies stop working at once (both were just used: any in-memory
    # copy of the session must be dropped too)
    upstream = stack.upstream_requests()
    for b in browsers:
        r = stack.get(b, "pivot", "/demarches")
        assert r.status == 302, (r.status, r.body[:300])
    assert stack.upstream_requests() == upstream
    after = set(stack.redis.cli("--scan", "--pattern", "*").split())
    assert not any("paola-004" in k for k in after)
    assert not any(sub_of("pivot", "paola") in k for k in after)
    gone = before - after
    assert len([k for k in gone if k.startswith(env.SESSION_PREFIX + "s:")]) == 2
    rc, out, err = stack.tool("preinscrits", "pivot", "show", "paola-004")
    assert rc == 3
    # the person is unknown again (link-only)
    b = stack.browser()
    r = stack.sign_in(b, "pivot", "paola")
    assert r.status == 403 and stack.session_cookie(b, "pivot") is None


# ---------------------------------------------------------------- 5. http plugin

def test_http_plugin_resolves_account_and_attributes(stack):
    sub = sub_of("grc", "jean")
    n = len(stack.grc.entries())
    b = stack.browser()
    assert stack.sign_in(b, "grc", "jean").status == 303
    h = stack.echoed_headers(b, "grc", "/demarches")
    assert h["x-sesame-account"] == ["crm-" + sub[:16]]
    assert h["x-sesame-family-name"] == ["D%27ALMEIDA-L%C3%89V%C3%8AQUE"]
    # the signed request, as the service received and verified it
    entries = stack.grc.entries()[n:]
    assert len(entries) == 1
    e = entries[0]
    assert e["verified"] is True and e["status"] == 200
    assert e["content_type"] == "application/json"
    assert e["body"]["tenant"] == "grc"
    assert e["body"]["provider"] == provider("grc")
    assert e["body"]["sub"] == sub
    ident = identity("jean")
    for claim in ("given_name", "family_name", "birthdate", "birthplace", "birthcountry"):
        assert e["body"]["claims"][claim] == ident[claim]
    # the attributes of the answer drive the routes' conditions
    assert stack.get(b, "grc", "/centre").status == 200
    assert stack.get(b, "grc", "/tenant").status == 200
    r = stack.get(b, "grc", "/gare")
    assert r.status == 403
    assert "Service réservé au quartier de la Gare." in page_text(r)


def test_http_plugin_server_down_error_page(stack):
    b = stack.browser()
    before = stack.upstream_requests(), session_keys(stack)
    r = stack.sign_in(b, "grcpanne", "jean")
    text = assert_refused_without_session(stack, b, "grcpanne", r, before, 503)
    assert "momentanément indisponible" in text
    # the cause is in the error log (connection refused, then one retry)
    assert "account plugin: account service unreachable" in stack.gw.errors()


# ---------------------------------------------------------------- 6. identity to upstreams

BASE_HEADERS = {"x-sesame-account", "x-sesame-acr", "x-sesame-provider"}


@pytest.fixture(scope="module")
def jean(stack):
    """Jean (accents, apostrophe) signed in on the `creer` tenant."""
    b = stack.browser()
    assert stack.sign_in(b, "creer", "jean").status == 303
    b.account = stack.echoed_headers(b, "creer", "/rien")["x-sesame-account"][0]
    return b


def test_exactly_the_listed_claims_per_route(stack, jean):
    spoof = {"X-Sesame-Email": "spoof@example.org", "x-sesame-gender": "spoof",
             "X_Sesame_Account": "spoof", "X-SESAME-ASSERTION": "spoof"}
    expected = {
        "/rien": set(),
        "/demarches": {"x-sesame-given-name", "x-sesame-family-name", "x-sesame-birthdate"},
        "/brut": {"x-sesame-given-name", "x-sesame-family-name"},
        "/b64": {"x-sesame-family-name"},
        "/assertion": {"x-sesame-given-name", "x-sesame-family-name", "x-sesame-birthdate",
                       "x-sesame-assertion"},
    }
    for path, claims in expected.items():
        r = stack.get(jean, "creer", path, headers=spoof)
        assert r.status == 200
        h = env.echoed(r.body)["h"]
        assert sesame_headers(h) == BASE_HEADERS | claims, path
        assert not any(k.startswith("x_sesame") for k in h), path
        assert all(len(h[k]) == 1 for k in sesame_headers(h)), path
        assert "spoof" not in json.dumps(h), path
    h = stack.echoed_headers(jean, "creer", "/demarches")
    assert h["x-sesame-acr"] == ["eidas1"]
    assert h["x-sesame-provider"] == [provider("creer")]
    assert h["x-sesame-family-name"] == ["D%27ALMEIDA-L%C3%89V%C3%8AQUE"]
    assert h["x-sesame-given-name"] == ["Jean-Baptiste"]
    assert h["x-sesame-birthdate"] == ["1979-03-02"]
    # a public route gets no identity at all, even from a signed-in browser
    r = stack.get(jean, "creer", "/", headers=spoof)
    assert r.status == 200
    assert sesame_headers(env.echoed(r.body)["h"]) == set()


def test_header_encodings_raw_and_base64url(stack, jean):
    ident = identity("jean")
    h = stack.echoed_headers(jean, "creer", "/brut")
    # the echo upstream decodes header bytes as ISO-8859-1
    raw = h["x-sesame-family-name"][0].encode("latin-1").decode("utf-8")
    assert raw == ident["family_name"] == "D'ALMEIDA-LÉVÊQUE"
    assert h["x-sesame-given-name"] == [ident["given_name"]]
    assert h["x-sesame-account"] == [jean.account]
    h = stack.echoed_headers(jean, "creer", "/b64")
    value = h["x-sesame-family-name"][0]
    assert re.fullmatch(r"[A-Za-z0-9_-]+", value), value
    assert b64url_decode(value).decode("utf-8") == ident["family_name"]
    assert b64url_decode(h["x-sesame-account"][0]).decode("ascii") == jean.account


def verify_es256(jwt, jwks):
    """Verifies a compact JWS (ES256, raw R||S) against a JWKS. Returns
    (header, claims); raises on any failure."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    head_b64, payload_b64, sig_b64 = jwt.split(".")
    header = json.loads(b64url_decode(head_b64))
    assert header["alg"] == "ES256"
    keys = [k for k in jwks["keys"] if k.get("kid") == header["kid"]]
    assert len(keys) == 1, (header, jwks)
    k = keys[0]
    assert (k["kty"], k["crv"]) == ("EC", "P-256")
    pub = ec.EllipticCurvePublicNumbers(int.from_bytes(b64url_decode(k["x"]), "big"),
                                        int.from_bytes(b64url_decode(k["y"]), "big"),
                                        ec.SECP256R1()).public_key()
    sig = b64url_decode(sig_b64)
    assert len(sig) == 64
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    pub.verify(der, (head_b64 + "." + payload_b64).encode("ascii"), ec.ECDSA(hashes.SHA256()))
    return header, json.loads(b64url_decode(payload_b64))


def test_assertion_verifies_against_jwks(stack, jean):
    from cryptography.exceptions import InvalidSignature

    r = stack.get(jean, "creer", "/sesame/jwks.json")
    assert r.status == 200
    jwks = json.loads(r.body)
    # the published key is the public half of assertion_key_file
    ours = stack.assertion_key.public_key().public_numbers()
    def coord(k, c):
        return int.from_bytes(b64url_decode(k[c]), "big")

    assert [(coord(k, "x"), coord(k, "y")) for k in jwks["keys"]] == [(ours.x, ours.y)]
    assert all("d" not in k for k in jwks["keys"])

    t0 = int(time.time())
    h = stack.echoed_headers(jean, "creer", "/assertion")
    t1 = int(time.time())
    jwt = h["x-sesame-assertion"][0]
    header, claims = verify_es256(jwt, jwks)
    ident = identity("jean")
    assert claims["aud"] == "creer-assertion"
    assert claims["sub"] == jean.account == h["x-sesame-account"][0]
    # time(2) reads the kernel's coarse clock, which may still show the
    # previous second for a few milliseconds after Python's clock turned
    assert t0 - 1 <= claims["iat"] <= t1
    assert claims["exp"] == claims["iat"] + 60
    assert claims["iss"] == stack.base("creer")
    assert claims["acr"] == "eidas1"
    assert claims["jti"]
    for c in ("given_name", "family_name", "birthdate"):
        assert claims[c] == ident[c]
    assert "email" not in claims and "gender" not in claims and "birthplace" not in claims
    # a fresh jti each time
    jwt2 = stack.echoed_headers(jean, "creer", "/assertion")["x-sesame-assertion"][0]
    assert verify_es256(jwt2, jwks)[1]["jti"] != claims["jti"]

    # tampered assertions do not verify
    head_b64, payload_b64, sig_b64 = jwt.split(".")
    forged = dict(claims, sub="quelqu-un-d-autre")
    forged_b64 = base64.urlsafe_b64encode(
        json.dumps(forged, separators=(",", ":")).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidSignature):
        verify_es256("%s.%s.%s" % (head_b64, forged_b64, sig_b64), jwks)
    sig = bytearray(b64url_decode(sig_b64))
    sig[10] ^= 0x01
    bad_sig = base64.urlsafe_b64encode(bytes(sig)).rstrip(b"=").decode()
    with pytest.raises(InvalidSignature):
        verify_es256("%s.%s.%s" % (head_b64, payload_b64, bad_sig), jwks)


# ---------------------------------------------------------------- 7. plugin ABI

BAD_ABI_CONF = """[server]
listen = 127.0.0.1:8080

[tenant ville-a]
public_url = http://ville-a.localhost:8080
accounts = vieux

[route accueil]
tenant = ville-a
upstream = http://127.0.0.1:9000
access = public

[accounts vieux]
plugin = {plugin}
"""


def test_wrong_abi_version_refused_by_config_check(tmp_path):
    assert os.path.exists(env.BADABI), "build the test plugins first: make check (%s)" % env.BADABI
    line = BAD_ABI_CONF.splitlines().index("[accounts vieux]") + 1
    conf = tmp_path / "abi.conf"
    conf.write_text(BAD_ABI_CONF.format(plugin=env.BADABI))
    rc, out = check_config(str(conf))
    assert rc != 0, out
    assert ('%s:%d: accounts vieux: plugin "badabi" (%s) has ABI version 999, this sesame '
            'expects version 1' % (conf, line, env.BADABI)) in out, out
    assert "configuration OK" not in out

    # the same plugin by short name, found in SESAME_PLUGIN_DIR
    plugdir = tmp_path / "plugins"
    plugdir.mkdir()
    os.symlink(env.BADABI, str(plugdir / "sesame_vieux.so"))
    conf.write_text(BAD_ABI_CONF.format(plugin="vieux"))
    p = subprocess.run([sesame_binary(), "-t", "-c", str(conf)], capture_output=True, text=True,
                       timeout=30, env=dict(os.environ, SESAME_PLUGIN_DIR=str(plugdir)))
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert ('%s:%d: accounts vieux: plugin "badabi" (%s/sesame_vieux.so) has ABI version 999, '
            'this sesame expects version 1' % (conf, line, plugdir)) in out, out

    # and a plugin of the right version passes the same check
    secret = tmp_path / "grc.secret"
    secret.write_text("0123456789abcdef0123456789abcdef\n")
    os.chmod(secret, 0o600)
    conf.write_text(BAD_ABI_CONF.format(plugin="http") + "url = https://127.0.0.1:1/x\n"
                    "secret_file = %s\n" % secret)
    rc, out = check_config(str(conf))
    assert rc == 0, out
    assert "configuration OK" in out
