"""Tests of the mock FranceConnect (tests/mockfc/mockfc.py) and of the echo upstream.

Run: /usr/bin/python3 -m pytest tests/integration/test_mockfc.py
Tokens are checked here with `cryptography` directly (not with the mock's minijose), so that the
mock is verified against an independent reading of JWS / JWE.
"""

import base64
import hashlib
import hmac
import http.client
import http.server
import json
import os
import re
import socket
import ssl
import stat
import struct
import sys
import threading
import urllib.parse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mockfc"))
import harness  # noqa: E402
import minijose  # noqa: E402

CB = "https://app.test/sesame/callback"
LOGOUT_CB = "https://app.test/sesame/logout/callback"
SUB_RE = re.compile(r"^[0-9a-f]{64}v1$")
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
IDENTITIES = harness.load_identities()
ACTIVE_LOGINS = [i["login"] for i in IDENTITIES if i["login"] != "desactive"]

PKJWT_KEY, _, PKJWT_PUB = harness.new_client_key("EC", kid="pk-1", use="sig")


def client(cid, **extra):
    d = {"client_id": cid, "client_secret": "secret-" + cid, "redirect_uris": [CB],
         "post_logout_redirect_uris": [LOGOUT_CB]}
    d.update(extra)
    return d


FC_CLIENTS = [
    client("client-es"),
    client("client-rs", id_token_signed_response_alg="RS256"),
    client("client-basic", token_endpoint_auth_method="client_secret_basic"),
    client("client-pkjwt", token_endpoint_auth_method="private_key_jwt",
           jwks={"keys": [PKJWT_PUB]}),
    client("client-scoped", scopes=["openid", "given_name", "family_name"]),
]


# ---------------------------------------------------------------- independent JOSE checks

def b64d(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64int(text):
    return int.from_bytes(b64d(text), "big")


def jwk_public_key(jwk):
    if jwk["kty"] == "EC":
        assert jwk["crv"] == "P-256"
        return ec.EllipticCurvePublicNumbers(b64int(jwk["x"]), b64int(jwk["y"]),
                                             ec.SECP256R1()).public_key()
    assert jwk["kty"] == "RSA"
    return rsa.RSAPublicNumbers(b64int(jwk["e"]), b64int(jwk["n"])).public_key()


def split_jws(token):
    h64, p64, s64 = token.split(".")
    return json.loads(b64d(h64)), json.loads(b64d(p64)), b64d(s64), (h64 + "." + p64).encode()


def verify_jws(token, jwks):
    """Verifies an ES256 / RS256 compact JWS with the key of its kid; returns (header, claims)."""
    header, claims, sig, data = split_jws(token)
    matches = [k for k in jwks["keys"] if k.get("kid") == header.get("kid")]
    assert len(matches) == 1, "kid %r not in the JWKS" % header.get("kid")
    key = jwk_public_key(matches[0])
    if header["alg"] == "ES256":
        assert len(sig) == 64
        key.verify(encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                        int.from_bytes(sig[32:], "big")),
                   data, ec.ECDSA(hashes.SHA256()))
    elif header["alg"] == "RS256":
        key.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
    else:
        raise AssertionError("unexpected alg %r" % header["alg"])
    return header, claims


def jws_verifies(token, jwks):
    try:
        verify_jws(token, jwks)
        return True
    except Exception:  # any failure means "does not verify"
        return False


def decrypt_jwe(token, private_key):
    parts = token.split(".")
    assert len(parts) == 5
    header = json.loads(b64d(parts[0]))
    assert header["enc"] == "A256GCM"
    ek, iv, ct, tag = (b64d(p) for p in parts[1:])
    if header["alg"] == "RSA-OAEP":
        cek = private_key.decrypt(ek, padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(),
                                                   None))
    elif header["alg"] == "RSA-OAEP-256":
        cek = private_key.decrypt(ek, padding.OAEP(padding.MGF1(hashes.SHA256()),
                                                   hashes.SHA256(), None))
    elif header["alg"] == "ECDH-ES":
        assert ek == b""
        z = private_key.exchange(ec.ECDH(), jwk_public_key(header["epk"]))
        other = (struct.pack(">I", 7) + b"A256GCM" + struct.pack(">I", 0) + struct.pack(">I", 0)
                 + struct.pack(">I", 256))
        cek = hashlib.sha256(struct.pack(">I", 1) + z + other).digest()
    else:
        raise AssertionError("unexpected alg %r" % header["alg"])
    assert len(iv) == 12 and len(tag) == 16
    return header, AESGCM(cek).decrypt(iv, ct + tag, parts[0].encode("ascii")).decode("ascii")


# ---------------------------------------------------------------- fixtures and flow helpers

@pytest.fixture(scope="module")
def fc_proc(tmp_path_factory):
    mock = harness.start_mockfc(str(tmp_path_factory.mktemp("mockfc")), FC_CLIENTS)
    yield mock
    mock.stop()


@pytest.fixture
def fc(fc_proc):
    fc_proc.reset()
    return fc_proc


def token_request(mock, cid, code, redirect_uri=CB, secret=None, extra=None, headers=None):
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "client_id": cid, "client_secret": secret or "secret-" + cid}
    form.update(extra or {})
    form = {k: v for k, v in form.items() if v is not None}
    return mock.request("POST", mock.issuer + "/token", urllib.parse.urlencode(form),
                        dict(FORM, **(headers or {})))


def get_code(mock, cid, login="marie", **auth):
    mock.autologin(login)
    url, state, nonce = mock.authorize_url(cid, CB, **auth)
    reply = mock.request("GET", url)
    assert reply.status == 302, reply.text()
    params = reply.location_params()
    return dict(params), params, state, nonce


def flow(mock, cid, login="marie", **auth):
    """Authorize (autologin), exchange the code, fetch userinfo. Returns a dict of the pieces."""
    cb, cb_pairs, state, nonce = get_code(mock, cid, login, **auth)
    assert cb["state"] == state
    tok = token_request(mock, cid, cb["code"])
    out = {"callback": cb, "callback_pairs": cb_pairs, "state": state, "nonce": nonce,
           "token_reply": tok}
    if tok.status != 200:
        return out
    out["token"] = tok.json()
    ui = mock.request("GET", mock.issuer + "/userinfo",
                      headers={"Authorization": "Bearer " + out["token"]["access_token"]})
    out["userinfo_reply"] = ui
    return out


def assert_error_page(reply):
    assert reply.status == 400
    assert reply.header("Location") is None
    assert reply.header("Content-Type").startswith("text/html")
    assert "Y000400" in reply.text()


# ---------------------------------------------------------------- discovery, keys, TLS

def test_discovery_content(fc):
    d = fc.discovery()
    assert d["issuer"] == fc.issuer == "https://127.0.0.1:%d/api/v2" % fc.port
    for name, path in (("authorization_endpoint", "/authorize"), ("token_endpoint", "/token"),
                       ("userinfo_endpoint", "/userinfo"), ("jwks_uri", "/jwks"),
                       ("end_session_endpoint", "/session/end")):
        assert d[name] == fc.issuer + path
    assert d["response_types_supported"] == ["code"]
    assert set(d["id_token_signing_alg_values_supported"]) == {"ES256", "RS256"}
    assert set(d["userinfo_signing_alg_values_supported"]) == {"ES256", "RS256"}
    assert "client_secret_post" in d["token_endpoint_auth_methods_supported"]
    assert "private_key_jwt" in d["token_endpoint_auth_methods_supported"]
    assert d["acr_values_supported"] == ["eidas1"]
    assert "code_challenge_methods_supported" not in d
    for scope in ("openid", "given_name", "birthplace", "profile", "birth", "identite_pivot"):
        assert scope in d["scopes_supported"]


def test_https_needs_the_test_ca(fc):
    with pytest.raises(ssl.SSLCertVerificationError):
        harness.http_request(fc.issuer + "/jwks", ssl_context=ssl.create_default_context())
    ctx = ssl.create_default_context(cafile=fc.ca_file)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    assert harness.http_request(fc.issuer + "/jwks", ssl_context=ctx).status == 200
    by_name = harness.http_request("https://localhost:%d/api/v2/jwks" % fc.port,
                                   ssl_context=fc.ssl_context())
    assert by_name.status == 200


def test_server_certificate_and_pki_reuse(fc, tmp_path):
    with open(os.path.join(fc.pki_dir, "server.pem"), "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    assert ips == {"127.0.0.1", "::1"}
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    for key in ("ca.key", "server.key"):
        assert stat.S_IMODE(os.stat(os.path.join(fc.pki_dir, key)).st_mode) == 0o600
    with open(fc.ca_file, "rb") as f:
        ca_before = f.read()
    second = harness.start_mockfc(str(tmp_path), FC_CLIENTS[:1], pki_dir=fc.pki_dir)
    try:
        with open(fc.ca_file, "rb") as f:
            assert f.read() == ca_before
        assert second.port != fc.port
        assert second.request("GET", second.issuer + "/jwks").status == 200
    finally:
        second.stop()
    assert not second.alive()


def test_jwks_has_ec_and_rsa_keys_with_kids(fc):
    keys = fc.jwks()["keys"]
    ec_keys = [k for k in keys if k["kty"] == "EC"]
    rsa_keys = [k for k in keys if k["kty"] == "RSA"]
    assert len(ec_keys) == 1 and len(rsa_keys) == 1
    assert ec_keys[0]["crv"] == "P-256" and ec_keys[0]["alg"] == "ES256"
    assert rsa_keys[0]["alg"] == "RS256"
    assert jwk_public_key(rsa_keys[0]).key_size == 2048
    assert ec_keys[0]["kid"] and rsa_keys[0]["kid"] and ec_keys[0]["kid"] != rsa_keys[0]["kid"]
    for k in keys:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(k)


def test_bad_config_fails_fast(tmp_path):
    with pytest.raises(harness.HarnessError) as info:
        harness.start_mockfc(str(tmp_path), [{"client_id": "x", "redirect_uris": [CB],
                                              "typo_field": 1, "client_secret": "s"}])
    assert "unknown fields" in str(info.value)


# ---------------------------------------------------------------- authorize refusals

@pytest.mark.parametrize("extra", [{"code_challenge": "abc", "code_challenge_method": "S256"},
                                   {"max_age": "0"}, {"login_hint": "marie"},
                                   {"response_mode": "query"}, {"foo": "bar"}])
def test_authorize_refuses_unknown_parameters_with_a_page(fc, extra):
    fc.autologin("marie")
    url, _, _ = fc.authorize_url("client-es", CB, **extra)
    assert_error_page(fc.request("GET", url))


def test_authorize_refuses_duplicated_parameters(fc):
    url, state, _ = fc.authorize_url("client-es", CB)
    assert_error_page(fc.request("GET", url + "&state=" + state))


@pytest.mark.parametrize("cid,redirect_uri", [("nobody", CB), ("client-es", CB + "/"),
                                               ("client-es", "https://evil.test/cb"),
                                               ("client-es", CB.upper())])
def test_authorize_refuses_unknown_client_or_redirect_uri(fc, cid, redirect_uri):
    url, _, _ = fc.authorize_url(cid, redirect_uri)
    assert_error_page(fc.request("GET", url))


def test_authorize_nonce_length_and_state(fc):
    url, _, _ = fc.authorize_url("client-es", CB, nonce="n" * 21)
    assert_error_page(fc.request("GET", url))
    url, _, _ = fc.authorize_url("client-es", CB, nonce="n" * 22)
    assert fc.request("GET", url).status == 200
    url, _, _ = fc.authorize_url("client-es", CB)
    no_state = re.sub(r"&state=[^&]*", "", url)
    assert "state=" not in no_state
    assert_error_page(fc.request("GET", no_state))
    assert_error_page(fc.request("GET", re.sub(r"state=[^&]*", "state=", url)))


def test_authorize_other_malformed_requests(fc):
    for kwargs in ({"scope": "given_name family_name"}, {"prompt": "none"}, {"claims": "{"}):
        url, _, _ = fc.authorize_url("client-es", CB, **kwargs)
        assert_error_page(fc.request("GET", url))
    url, _, _ = fc.authorize_url("client-es", CB)
    assert_error_page(fc.request("GET", url.replace("response_type=code", "response_type=token")))
    url, _, _ = fc.authorize_url("client-es", CB, prompt="login consent",
                                 claims='{"id_token":{"amr":{"essential":true}}}',
                                 ui_locales="fr", idp_hint="fip1")
    assert fc.request("GET", url).status == 200


@pytest.mark.parametrize("acr", ["eidas2", "eidas1 eidas2", "eidas3", ""])
def test_authorize_bad_acr_redirects_invalid_acr(fc, acr):
    url, state, _ = fc.authorize_url("client-es", CB, acr_values=acr)
    reply = fc.request("GET", url)
    assert reply.status == 302
    loc = reply.header("Location")
    assert loc.startswith(CB + "?")
    params = dict(reply.location_params())
    assert params["error"] == "invalid_acr"
    assert params["state"] == state
    assert params["iss"] == fc.issuer
    assert "code" not in params


def test_authorize_invalid_scope_redirects(fc):
    url, state, _ = fc.authorize_url("client-es", CB, scope="openid address")
    params = dict(fc.request("GET", url).location_params())
    assert params["error"] == "invalid_scope" and params["state"] == state
    url, _, _ = fc.authorize_url("client-scoped", CB, scope="openid email")
    assert dict(fc.request("GET", url).location_params())["error"] == "invalid_scope"
    fc.autologin("marie")
    url, _, _ = fc.authorize_url("client-scoped", CB, scope="openid given_name")
    assert "code" in dict(fc.request("GET", url).location_params())


# ---------------------------------------------------------------- identity page

def test_identity_page_lists_every_identity_and_cancel(fc):
    url, state, _ = fc.authorize_url("client-es", CB)
    reply = fc.request("GET", url)
    assert reply.status == 200 and reply.header("Content-Type").startswith("text/html")
    page = reply.text()
    for ident in IDENTITIES:
        assert harness.identity_link(page, ident["login"])
    cancel = fc.request("GET", harness.cancel_link(page))
    assert cancel.status == 302
    params = dict(cancel.location_params())
    assert params == {"error": "access_denied", "error_description": "User auth aborted",
                      "state": state, "iss": fc.issuer}
    # the interaction is single use
    again = fc.request("GET", harness.identity_link(page, "marie"))
    assert again.status == 400 and again.header("Location") is None


def test_identity_page_login_gives_a_code(fc):
    url, state, nonce = fc.authorize_url("client-es", CB)
    page = fc.request("GET", url).text()
    reply = fc.request("GET", harness.identity_link(page, "jean"))
    assert reply.status == 302
    pairs = reply.location_params()
    assert [name for name, _ in pairs] == ["code", "state", "iss"]
    params = dict(pairs)
    assert params["state"] == state and params["iss"] == fc.issuer
    tok = token_request(fc, "client-es", params["code"])
    assert tok.status == 200
    _, claims = verify_jws(tok.json()["id_token"], fc.jwks())
    assert claims["nonce"] == nonce and claims["sub"] == harness.expected_sub("client-es", "jean")


def test_desactive_is_refused(fc):
    url, state, _ = fc.authorize_url("client-es", CB)
    page = fc.request("GET", url).text()
    params = dict(fc.request("GET", harness.identity_link(page, "desactive")).location_params())
    assert params["error"] == "access_denied" and params["state"] == state
    assert "code" not in params
    fc.autologin("desactive")
    url, _, _ = fc.authorize_url("client-es", CB)
    assert dict(fc.request("GET", url).location_params())["error"] == "access_denied"


# ---------------------------------------------------------------- code flow

def test_full_flow_es256(fc):
    r = flow(fc, "client-es", "marie")
    assert r["callback"]["iss"] == fc.issuer
    tok = r["token"]
    assert tok["token_type"] == "Bearer" and tok["expires_in"] == 60
    assert r["token_reply"].header("Cache-Control") == "no-store"
    jwks = fc.jwks()
    header, claims = verify_jws(tok["id_token"], jwks)
    assert header["alg"] == "ES256"
    assert [k for k in jwks["keys"] if k["kid"] == header["kid"]][0]["kty"] == "EC"
    assert claims["iss"] == fc.issuer
    assert claims["aud"] == "client-es"
    assert claims["sub"] == harness.expected_sub("client-es", "marie")
    assert SUB_RE.match(claims["sub"])
    assert claims["exp"] - claims["iat"] == 60
    assert claims["auth_time"] <= claims["iat"]
    assert claims["nonce"] == r["nonce"]
    assert claims["acr"] == "eidas1"
    assert claims["amr"] == ["pwd"]
    digest = hashlib.sha256(tok["access_token"].encode("ascii")).digest()
    assert claims["at_hash"] == base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()
    ui = r["userinfo_reply"]
    assert ui.status == 200 and ui.header("Content-Type") == "application/jwt"
    uheader, uclaims = verify_jws(ui.text(), jwks)
    assert uheader["alg"] == "ES256"
    assert uclaims["sub"] == claims["sub"]
    assert uclaims["given_name"] == "Marie Claire Odile"
    assert uclaims["family_name"] == "MARTIN"
    assert uclaims["birthplace"] == "75107" and uclaims["birthcountry"] == "99100"
    assert "preferred_username" not in uclaims


@pytest.mark.parametrize("login", ACTIVE_LOGINS)
def test_every_identity_rs256(fc, login):
    ident = [i for i in IDENTITIES if i["login"] == login][0]
    r = flow(fc, "client-rs", login,
             scope="openid identite_pivot email preferred_username idp_birthdate")
    jwks = fc.jwks()
    header, claims = verify_jws(r["token"]["id_token"], jwks)
    assert header["alg"] == "RS256"
    assert claims["sub"] == harness.expected_sub("client-rs", login)
    ui = r["userinfo_reply"]
    uheader, uclaims = verify_jws(ui.text(), jwks)
    assert uheader["alg"] == "RS256"
    expected = {"sub": claims["sub"], "iss": fc.issuer, "aud": "client-rs"}
    for name in ("given_name", "family_name", "birthdate", "gender", "birthplace",
                 "birthcountry", "idp_birthdate", "email", "preferred_username"):
        if ident[name] != "" or name == "birthplace":
            expected[name] = ident[name]
    del uclaims["iat"]
    assert uclaims == expected


def test_scopes_select_claims(fc):
    r = flow(fc, "client-es", "karim", scope="openid birth")
    _, uclaims = verify_jws(r["userinfo_reply"].text(), fc.jwks())
    assert uclaims["birthplace"] == "" and uclaims["birthcountry"] == "99352"
    assert not {"given_name", "family_name", "email", "birthdate"} & set(uclaims)
    r = flow(fc, "client-es", "jean", scope="openid profile")
    _, uclaims = verify_jws(r["userinfo_reply"].text(), fc.jwks())
    assert uclaims["preferred_username"] == "DUPONT"
    assert uclaims["family_name"] == "D'ALMEIDA-LÉVÊQUE"
    assert "birthplace" not in uclaims and "email" not in uclaims
    r = flow(fc, "client-es", "sans_mail", scope="openid email given_name")
    _, uclaims = verify_jws(r["userinfo_reply"].text(), fc.jwks())
    assert "email" not in uclaims and uclaims["given_name"] == "Gérard"


def test_sub_differs_per_client_and_is_stable(fc):
    subs = {}
    for cid in ("client-es", "client-rs", "client-es"):
        _, claims = verify_jws(flow(fc, cid, "pierre1")["token"]["id_token"], fc.jwks())
        assert SUB_RE.match(claims["sub"])
        subs.setdefault(cid, set()).add(claims["sub"])
    assert len(subs["client-es"]) == 1
    assert subs["client-es"] != subs["client-rs"]
    other = verify_jws(flow(fc, "client-es", "pierre2")["token"]["id_token"], fc.jwks())[1]
    assert {other["sub"]} != subs["client-es"]


def test_code_is_single_use(fc):
    cb, _, _, _ = get_code(fc, "client-es")
    assert token_request(fc, "client-es", cb["code"]).status == 200
    again = token_request(fc, "client-es", cb["code"])
    assert again.status == 400 and again.json()["error"] == "invalid_grant"


def test_code_expires_after_30_seconds(fc):
    cb, _, _, _ = get_code(fc, "client-es")
    fc.clock(advance=31)
    reply = token_request(fc, "client-es", cb["code"])
    assert reply.status == 400 and reply.json()["error"] == "invalid_grant"


def test_code_bound_to_client_and_redirect_uri(fc):
    cb, _, _, _ = get_code(fc, "client-es")
    reply = token_request(fc, "client-es", cb["code"], redirect_uri=CB + "/")
    assert reply.status == 400 and reply.json()["error"] == "invalid_grant"
    cb, _, _, _ = get_code(fc, "client-es")
    reply = token_request(fc, "client-rs", cb["code"])
    assert reply.status == 400 and reply.json()["error"] == "invalid_grant"
    cb, _, _, _ = get_code(fc, "client-es")
    reply = token_request(fc, "client-es", cb["code"], extra={"grant_type": "refresh_token"})
    assert reply.status == 400 and reply.json()["error"] == "unsupported_grant_type"


def test_client_authentication(fc):
    cb, _, _, _ = get_code(fc, "client-es")
    wrong = token_request(fc, "client-es", cb["code"], secret="nope")
    assert wrong.status == 401 and wrong.json()["error"] == "invalid_client"
    basic = "Basic " + base64.b64encode(b"client-es:secret-client-es").decode()
    cb, _, _, _ = get_code(fc, "client-es")
    form = {"grant_type": "authorization_code", "code": cb["code"], "redirect_uri": CB}
    reply = fc.request("POST", fc.issuer + "/token", urllib.parse.urlencode(form),
                       dict(FORM, Authorization=basic))
    assert reply.status == 401 and reply.json()["error"] == "invalid_client"
    assert reply.header("WWW-Authenticate", ) is not None
    # the same code still works: a refused client authentication does not consume it
    assert token_request(fc, "client-es", cb["code"]).status == 200
    # a client registered for Basic
    basic = "Basic " + base64.b64encode(b"client-basic:secret-client-basic").decode()
    cb, _, _, _ = get_code(fc, "client-basic")
    form = {"grant_type": "authorization_code", "code": cb["code"], "redirect_uri": CB}
    reply = fc.request("POST", fc.issuer + "/token", urllib.parse.urlencode(form),
                       dict(FORM, Authorization=basic))
    assert reply.status == 200, reply.text()
    cb, _, _, _ = get_code(fc, "client-basic")
    assert token_request(fc, "client-basic", cb["code"]).status == 401


def assertion(key, kid, cid, aud, jti=None, exp_delta=60, now=None):
    import time
    now = now or int(time.time())
    return minijose.jws_sign({"iss": cid, "sub": cid, "aud": aud, "exp": now + exp_delta,
                              "iat": now, "jti": jti or harness.random_token()},
                             key, "ES256", kid=kid)


def test_private_key_jwt(fc):
    def exchange(client_assertion):
        cb, _, _, _ = get_code(fc, "client-pkjwt")
        return token_request(fc, "client-pkjwt", cb["code"], extra={
            "client_secret": None, "client_assertion": client_assertion,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
    good = assertion(PKJWT_KEY, "pk-1", "client-pkjwt", fc.issuer + "/token", jti="j1")
    assert exchange(good).status == 200
    assert exchange(good).status == 401  # replayed jti
    other_key = minijose.generate_key("EC")
    assert exchange(assertion(other_key, "pk-1", "client-pkjwt", fc.issuer + "/token")
                    ).status == 401
    assert exchange(assertion(PKJWT_KEY, "pk-1", "client-pkjwt", "https://elsewhere/token")
                    ).status == 401
    assert exchange(assertion(PKJWT_KEY, "pk-1", "client-pkjwt", fc.issuer + "/token",
                              exp_delta=-60)).status == 401


def test_userinfo_needs_a_valid_bearer_token(fc):
    r = flow(fc, "client-es")
    token = r["token"]["access_token"]
    assert fc.request("GET", fc.issuer + "/userinfo").status == 401
    bad = fc.request("GET", fc.issuer + "/userinfo", headers={"Authorization": "Bearer x" + token})
    assert bad.status == 401 and "invalid_token" in bad.header("WWW-Authenticate")
    fc.clock(advance=61)
    late = fc.request("GET", fc.issuer + "/userinfo", headers={"Authorization": "Bearer " + token})
    assert late.status == 401


def test_log_records_requests_without_secrets(fc):
    r = flow(fc, "client-es")
    log = fc.log()
    endpoints = [e["endpoint"] for e in log]
    assert endpoints == ["authorize", "token", "userinfo"]
    assert log[0]["params"]["nonce"] == r["nonce"] and log[0]["outcome"] == "autologin"
    assert log[1]["params"]["client_secret"] == "<redacted>"
    assert log[1]["params"]["code"] == "<redacted>"
    assert log[1]["client_auth"] == "client_secret_post" and log[1]["status"] == 200
    assert log[2]["token_valid"] is True
    assert fc.log(since=log[1]["seq"]) == log[2:]
    text = json.dumps(log) + fc.stderr_text()
    for secret in ("secret-client-es", r["token"]["access_token"], r["callback"]["code"],
                   r["token"]["id_token"]):
        assert secret not in text
    assert r["nonce"] not in fc.stderr_text()


# ---------------------------------------------------------------- scenarios

ID_TOKEN_CHECKS = {
    "bad_signature": lambda fc, h, c, r, jwks: not jws_verifies(r["token"]["id_token"], jwks),
    "wrong_iss": lambda fc, h, c, r, jwks: c["iss"] != fc.issuer,
    "wrong_aud": lambda fc, h, c, r, jwks: c["aud"] != "client-es",
    "expired": lambda fc, h, c, r, jwks: c["exp"] < _now() - 120,
    "iat_future": lambda fc, h, c, r, jwks: c["iat"] > _now() + 300,
    "iat_old": lambda fc, h, c, r, jwks: c["iat"] < _now() - 3600 and c["exp"] > _now(),
    "missing_sub": lambda fc, h, c, r, jwks: "sub" not in c,
    "missing_iat": lambda fc, h, c, r, jwks: "iat" not in c,
    "missing_nonce": lambda fc, h, c, r, jwks: "nonce" not in c,
    "wrong_nonce": lambda fc, h, c, r, jwks: c["nonce"] != r["nonce"],
    "alg_none": lambda fc, h, c, r, jwks: h["alg"] == "none" and
    r["token"]["id_token"].endswith("."),
    "unknown_kid": lambda fc, h, c, r, jwks: h["kid"] not in [k["kid"] for k in jwks["keys"]],
    "acr_low": lambda fc, h, c, r, jwks: c["acr"] != "eidas1",
}


def _now():
    import time
    return int(time.time())


@pytest.mark.parametrize("name", sorted(ID_TOKEN_CHECKS))
def test_id_token_scenarios(fc, name):
    normal = flow(fc, "client-es")
    jwks = fc.jwks()
    h0, c0, _, _ = split_jws(normal["token"]["id_token"])
    assert jws_verifies(normal["token"]["id_token"], jwks)
    assert not ID_TOKEN_CHECKS[name](fc, h0, c0, normal, jwks)
    fc.scenario(name)
    r = flow(fc, "client-es")
    header, claims, _, _ = split_jws(r["token"]["id_token"])
    jwks = fc.jwks()
    assert ID_TOKEN_CHECKS[name](fc, header, claims, r, jwks)
    if name not in ("bad_signature", "alg_none", "unknown_kid"):
        assert jws_verifies(r["token"]["id_token"], jwks)
    fc.scenario("none")
    assert jws_verifies(flow(fc, "client-es")["token"]["id_token"], fc.jwks())


def test_hs256_pubkey_scenario(fc):
    jwks = fc.jwks()
    fc.scenario("hs256_pubkey")
    token = flow(fc, "client-rs")["token"]["id_token"]
    header, _, sig, data = split_jws(token)
    assert header["alg"] == "HS256"
    jwk = [k for k in jwks["keys"] if k["kid"] == header["kid"]][0]
    assert jwk["kty"] == "RSA"
    from cryptography.hazmat.primitives import serialization
    pem = jwk_public_key(jwk).public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    assert hmac.compare_digest(hmac.new(pem, data, hashlib.sha256).digest(), sig)


def test_rotate_keys_scenario(fc):
    before = {k["kid"] for k in fc.jwks()["keys"]}
    fc.scenario("rotate_keys")
    for cid in ("client-es", "client-rs"):
        r = flow(fc, cid)
        header, _, _, _ = split_jws(r["token"]["id_token"])
        assert header["kid"] not in before
        uheader, _, _, _ = split_jws(r["userinfo_reply"].text())
        assert uheader["kid"] == header["kid"]
    after = fc.jwks()
    assert before < {k["kid"] for k in after["keys"]}
    assert jws_verifies(r["token"]["id_token"], after)
    assert jws_verifies(r["userinfo_reply"].text(), after)
    fc.scenario("none")  # the rotation stays
    header, _, _, _ = split_jws(flow(fc, "client-es")["token"]["id_token"])
    assert header["kid"] not in before


def test_userinfo_scenarios(fc):
    fc.scenario("userinfo_sub_mismatch")
    r = flow(fc, "client-es")
    jwks = fc.jwks()
    _, claims = verify_jws(r["token"]["id_token"], jwks)
    _, uclaims = verify_jws(r["userinfo_reply"].text(), jwks)
    assert SUB_RE.match(uclaims["sub"]) and uclaims["sub"] != claims["sub"]
    fc.scenario("userinfo_unsigned")
    r = flow(fc, "client-es")
    assert r["userinfo_reply"].header("Content-Type").startswith("application/json")
    assert r["userinfo_reply"].json()["sub"] == harness.expected_sub("client-es", "marie")
    fc.scenario("userinfo_bad_signature")
    r = flow(fc, "client-es")
    assert jws_verifies(r["token"]["id_token"], jwks)
    assert not jws_verifies(r["userinfo_reply"].text(), jwks)


def test_token_endpoint_scenarios(fc):
    fc.scenario("token_error")
    r = flow(fc, "client-es")
    assert r["token_reply"].status == 500
    fc.scenario("token_slow")
    cb, _, _, _ = get_code(fc, "client-es")
    form = {"grant_type": "authorization_code", "code": cb["code"], "redirect_uri": CB,
            "client_id": "client-es", "client_secret": "secret-client-es"}
    with pytest.raises((socket.timeout, TimeoutError)):
        fc.request("POST", fc.issuer + "/token", urllib.parse.urlencode(form), FORM, timeout=1)


def test_callback_scenarios(fc):
    fc.scenario("duplicate_params")
    cb, pairs, state, _ = get_code(fc, "client-es")
    names = [n for n, _ in pairs]
    assert names.count("state") == 2 and names.count("code") == 2
    fc.scenario("wrong_iss_param")
    cb, _, _, _ = get_code(fc, "client-es")
    assert cb["iss"] != fc.issuer and cb["code"]
    fc.scenario("wrong_iss_param", value="https://evil.test/api/v2")
    assert get_code(fc, "client-es")[0]["iss"] == "https://evil.test/api/v2"


@pytest.mark.parametrize("error", ["access_denied", "invalid_scope", "server_error",
                                   "temporarily_unavailable", "invalid_acr", "other_error"])
def test_error_redirect_scenario(fc, error):
    fc.scenario("error_redirect", error=error)
    cb, _, state, _ = get_code(fc, "client-es")
    assert cb["error"] == error and cb["state"] == state and cb["iss"] == fc.issuer
    assert cb["error_description"] and "code" not in cb


def test_discovery_down_scenario(fc):
    fc.scenario("discovery_down")
    assert fc.request("GET", fc.issuer + "/.well-known/openid-configuration").status == 503
    assert fc.request("GET", fc.issuer + "/jwks").status == 503
    fc.scenario("none")
    assert fc.request("GET", fc.issuer + "/jwks").status == 200


def test_scenario_control_validation(fc):
    bad = fc.request("POST", "/__mock/scenario", json.dumps({"name": "no_such"}),
                     {"Content-Type": "application/json"})
    assert bad.status == 400 and "bad_signature" in bad.json()["known"]
    bad = fc.request("POST", "/__mock/scenario", json.dumps({"name": "wrong_aud", "x": 1}),
                     {"Content-Type": "application/json"})
    assert bad.status == 400
    assert fc.request("POST", "/__mock/autologin", json.dumps({"login": "ghost"}),
                      {"Content-Type": "application/json"}).status == 400
    fc.scenario("wrong_aud")
    assert fc.request("GET", "/__mock/scenario").json()["name"] == "wrong_aud"
    fc.reset()
    assert fc.request("GET", "/__mock/scenario").json()["name"] == "none"
    assert fc.log() == []


# ---------------------------------------------------------------- logout

def end_session(fc, **params):
    return fc.request("GET", fc.issuer + "/session/end?" + urllib.parse.urlencode(params))


def test_session_end(fc):
    r = flow(fc, "client-es")
    id_token = r["token"]["id_token"]
    state = harness.random_token()
    reply = end_session(fc, id_token_hint=id_token, state=state,
                        post_logout_redirect_uri=LOGOUT_CB)
    assert reply.status == 302
    assert reply.header("Location") == LOGOUT_CB + "?state=" + state
    entry = [e for e in fc.log() if e["endpoint"] == "session_end"][-1]
    assert entry["id_token_hint_valid"] is True
    assert entry["client_id"] == "client-es"
    assert entry["sub"] == harness.expected_sub("client-es", "marie")
    assert entry["params"]["id_token_hint"] == "<redacted>"
    # no state: redirect without it
    assert end_session(fc, id_token_hint=id_token, post_logout_redirect_uri=LOGOUT_CB
                       ).header("Location") == LOGOUT_CB
    # an expired id_token is still a valid hint
    fc.clock(advance=3600)
    assert end_session(fc, id_token_hint=id_token, post_logout_redirect_uri=LOGOUT_CB
                       ).status == 302
    # unregistered post_logout_redirect_uri
    assert_error_page(end_session(fc, id_token_hint=id_token,
                                  post_logout_redirect_uri=LOGOUT_CB + "/"))
    # tampered hint
    head, body, sig = id_token.split(".")
    forged = head + "." + body + "." + sig[:-4] + ("AAAA" if sig[-4:] != "AAAA" else "BBBB")
    assert_error_page(end_session(fc, id_token_hint=forged, post_logout_redirect_uri=LOGOUT_CB))
    assert [e for e in fc.log() if e["endpoint"] == "session_end"][-1][
        "id_token_hint_valid"] is False
    assert_error_page(end_session(fc, post_logout_redirect_uri=LOGOUT_CB))


def test_session_end_scenarios(fc):
    id_token = flow(fc, "client-es")["token"]["id_token"]
    fc.scenario("logout_drop_state")
    assert end_session(fc, id_token_hint=id_token, state="s" * 32,
                       post_logout_redirect_uri=LOGOUT_CB).header("Location") == LOGOUT_CB
    fc.scenario("logout_error_page")
    assert_error_page(end_session(fc, id_token_hint=id_token, state="s" * 32,
                                  post_logout_redirect_uri=LOGOUT_CB))


# ---------------------------------------------------------------- FranceConnect+

ENC_KEYS = {
    "RSA-OAEP": harness.new_client_key("RSA", kid="enc-rsa1", use="enc"),
    "RSA-OAEP-256": harness.new_client_key("RSA", kid="enc-rsa2", use="enc"),
    "ECDH-ES": harness.new_client_key("EC", kid="enc-ec", use="enc"),
}
URI_KEY = harness.new_client_key("EC", kid="enc-uri", use="enc", alg="ECDH-ES")


class _JwksHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"keys": [URI_KEY[2]]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def fcplus_proc(tmp_path_factory):
    jwks_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _JwksHandler)
    thread = threading.Thread(target=jwks_server.serve_forever, daemon=True)
    thread.start()
    clients = [client("plus-" + alg.lower(), encryption_alg=alg, jwks={"keys": [keys[2]]})
               for alg, keys in ENC_KEYS.items()]
    clients.append(client("plus-uri", jwks_uri="http://127.0.0.1:%d/jwks.json"
                          % jwks_server.server_address[1]))
    mock = harness.start_mockfc(str(tmp_path_factory.mktemp("mockfcplus")), clients,
                                mode="fcplus")
    yield mock
    mock.stop()
    jwks_server.shutdown()
    jwks_server.server_close()


@pytest.fixture
def fcplus(fcplus_proc):
    fcplus_proc.reset()
    return fcplus_proc


@pytest.mark.parametrize("alg", sorted(ENC_KEYS))
def test_fcplus_encrypted_tokens(fcplus, alg):
    key = ENC_KEYS[alg][0]
    r = flow(fcplus, "plus-" + alg.lower(), "theo", acr_values="eidas2")
    jwks = fcplus.jwks()
    header, inner = decrypt_jwe(r["token"]["id_token"], key)
    assert header["alg"] == alg and header["kid"] == ENC_KEYS[alg][2]["kid"]
    assert header["cty"] == "JWT"
    jheader, claims = verify_jws(inner, jwks)
    assert jheader["alg"] == "ES256"
    assert claims["acr"] == "eidas2" and claims["nonce"] == r["nonce"]
    ui = r["userinfo_reply"]
    assert ui.header("Content-Type") == "application/jwt"
    _, uinner = decrypt_jwe(ui.text(), key)
    _, uclaims = verify_jws(uinner, jwks)
    assert uclaims["sub"] == claims["sub"] and uclaims["birthplace"] == "97411"
    # minijose reads what the mock wrote, too
    assert minijose.jwe_decrypt(r["token"]["id_token"], key)[1].decode() == inner


def test_fcplus_jwks_uri_and_acr(fcplus):
    r = flow(fcplus, "plus-uri", acr_values="eidas3")
    header, inner = decrypt_jwe(r["token"]["id_token"], URI_KEY[0])
    assert header["alg"] == "ECDH-ES" and header["kid"] == "enc-uri"
    _, claims = verify_jws(inner, fcplus.jwks())
    assert claims["acr"] == "eidas3"
    r = flow(fcplus, "plus-uri", acr_values="eidas2 eidas3")
    assert verify_jws(decrypt_jwe(r["token"]["id_token"], URI_KEY[0])[1],
                      fcplus.jwks())[1]["acr"] == "eidas2"
    url, state, _ = fcplus.authorize_url("plus-uri", CB, acr_values="eidas1")
    assert dict(fcplus.request("GET", url).location_params())["error"] == "invalid_acr"
    fcplus.scenario("acr_low")
    r = flow(fcplus, "plus-uri", acr_values="eidas2")
    assert verify_jws(decrypt_jwe(r["token"]["id_token"], URI_KEY[0])[1],
                      fcplus.jwks())[1]["acr"] == "eidas1"
    assert fcplus.discovery()["acr_values_supported"] == ["eidas2", "eidas3"]


def test_fcplus_unencrypted_and_logout(fcplus):
    key = ENC_KEYS["RSA-OAEP-256"][0]
    r = flow(fcplus, "plus-rsa-oaep-256", acr_values="eidas2")
    jwe = r["token"]["id_token"]
    reply = end_session(fcplus, id_token_hint=jwe, state="x" * 32,
                        post_logout_redirect_uri=LOGOUT_CB)
    assert reply.status == 302
    assert [e for e in fcplus.log() if e["endpoint"] == "session_end"][-1][
        "id_token_hint_valid"] is True
    assert end_session(fcplus, id_token_hint=decrypt_jwe(jwe, key)[1],
                       post_logout_redirect_uri=LOGOUT_CB).status == 302
    fcplus.scenario("fcplus_unencrypted")
    r = flow(fcplus, "plus-rsa-oaep-256", acr_values="eidas2")
    assert r["token"]["id_token"].count(".") == 2
    assert jws_verifies(r["token"]["id_token"], fcplus.jwks())
    assert r["userinfo_reply"].text().count(".") == 2


# ---------------------------------------------------------------- minijose

def test_concat_kdf_rfc7518_appendix_c():
    alice = minijose.key_from_jwk({"kty": "EC", "crv": "P-256",
                                   "x": "gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0",
                                   "y": "SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps",
                                   "d": "0_NxaRPUMQoAJt50Gz8YiTr8gRTwyEaCumd-MToTmIo"})
    bob = minijose.key_from_jwk({"kty": "EC", "crv": "P-256",
                                 "x": "weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ",
                                 "y": "e8lnCO-AlStT-NJVX-crhB7QRYhiix03illJOVAOyck"})
    z = alice.exchange(ec.ECDH(), bob)
    derived = minijose.concat_kdf(z, 128, b"A128GCM", b"Alice", b"Bob")
    assert minijose.b64u_encode(derived) == "VqqN6vgjbSBcIijNcacQGg"


def test_minijose_refuses_none_and_tampering():
    key = minijose.generate_key("EC")
    token = minijose.jws_sign({"a": 1}, key, "ES256", kid="k")
    assert minijose.jws_verify(token, [("k", key.public_key())], ["ES256"])[1] == b'{"a":1}'
    with pytest.raises(minijose.JoseError):
        minijose.jws_verify(token, [("k", key.public_key())], ["RS256"])
    none = minijose.jws_sign({"a": 1}, None, "none")
    with pytest.raises(minijose.JoseError):
        minijose.jws_verify(none, [("k", key.public_key())], ["ES256", "none"])
    rsa_key = minijose.generate_key("RSA")
    jwe = minijose.jwe_encrypt(b"hello", rsa_key.public_key(), "RSA-OAEP-256")
    parts = jwe.split(".")
    parts[3] = minijose.b64u_encode(bytes([minijose.b64u_decode(parts[3])[0] ^ 1]) +
                                    minijose.b64u_decode(parts[3])[1:])
    with pytest.raises(minijose.JoseError):
        minijose.jwe_decrypt(".".join(parts), rsa_key)
    assert minijose.jwe_decrypt(jwe, rsa_key)[1] == b"hello"
    priv = minijose.key_from_jwk(minijose.private_jwk(rsa_key))
    assert priv.private_numbers() == rsa_key.private_numbers()


# ---------------------------------------------------------------- echo upstream

@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    up = harness.start_echo_upstream(str(tmp_path_factory.mktemp("echo")))
    yield up
    up.stop()


def test_echo_keep_alive_reuses_the_connection(echo):
    conn = http.client.HTTPConnection(echo.host, echo.port, timeout=10)
    try:
        seen = []
        for i in range(3):
            conn.request("GET", "/a?i=%d" % i)
            resp = conn.getresponse()
            assert resp.getheader("Content-Length") is not None
            seen.append(json.loads(resp.read()))
        assert len({e["connection_id"] for e in seen}) == 1
        assert [e["requests_on_connection"] for e in seen] == [1, 2, 3]
        assert seen[2]["path"] == "/a?i=2" and seen[2]["method"] == "GET"
    finally:
        conn.close()
    other = echo.request("GET", "/b").json()
    assert other["connection_id"] != seen[0]["connection_id"]
    assert other["connections_total"] >= 2


def test_echo_headers_in_order_and_bodies(echo):
    conn = http.client.HTTPConnection(echo.host, echo.port, timeout=10)
    try:
        conn.putrequest("POST", "/form", skip_accept_encoding=True)
        conn.putheader("X-First", "1")
        conn.putheader("x-dup", "a")
        conn.putheader("X-Second", "2")
        conn.putheader("X-Dup", "b")
        body = "name=Gérard&x=1".encode("utf-8")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        e = json.loads(conn.getresponse().read())
        names = [h[0] for h in e["headers"]]
        assert names[names.index("X-First"):] == ["X-First", "x-dup", "X-Second", "X-Dup",
                                                  "Content-Length"]
        assert ["X-Dup", "b"] in e["headers"] and ["x-dup", "a"] in e["headers"]
        assert e["body_len"] == len(body)
        assert e["body_sha256"] == hashlib.sha256(body).hexdigest()
        assert e["body_text"] == "name=Gérard&x=1"
        pieces = [b"x" * 1000, b"y" * 70000, b"z"]
        conn.request("PUT", "/chunked", body=iter(pieces), encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        e = json.loads(conn.getresponse().read())
        assert e["method"] == "PUT" and e["body_len"] == 71001
        assert e["body_sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()
        assert e["body_text"] is None  # longer than 64 KiB
    finally:
        conn.close()


@pytest.mark.parametrize("size", [0, 1, 250, 251, 64256, 64257, 1000003])
@pytest.mark.parametrize("chunked", [False, True])
def test_echo_big(echo, size, chunked):
    conn = http.client.HTTPConnection(echo.host, echo.port, timeout=30)
    try:
        conn.request("GET", "/__big?size=%d%s" % (size, "&chunked=1" if chunked else ""))
        resp = conn.getresponse()
        if chunked:
            assert resp.getheader("Transfer-Encoding") == "chunked"
        else:
            assert resp.getheader("Content-Length") == str(size)
        data = resp.read()
        assert len(data) == size
        assert hashlib.sha256(data).hexdigest() == harness.big_pattern_sha256(size)
        assert data == harness.big_pattern(size)
        conn.request("GET", "/after")  # the connection is still usable
        assert json.loads(conn.getresponse().read())["path"] == "/after"
    finally:
        conn.close()


def test_echo_close_slow_and_stats(echo):
    before = echo.stats()
    conn = http.client.HTTPConnection(echo.host, echo.port, timeout=10)
    try:
        conn.request("GET", "/__close")
        resp = conn.getresponse()
        assert resp.getheader("Connection") == "close"
        first = json.loads(resp.read())
        conn.request("GET", "/__slow?ms=20")  # http.client reconnects after a close
        second = json.loads(conn.getresponse().read())
        assert second["connection_id"] != first["connection_id"]
        assert second["path"] == "/__slow?ms=20"
    finally:
        conn.close()
    after = echo.stats()
    assert after["requests_total"] == before["requests_total"] + 2
    assert after["connections_total"] == before["connections_total"] + 2
    assert echo.stats()["requests_total"] == after["requests_total"]  # /__stats is not counted
    assert echo.log()[-1]["path"] == "/__slow?ms=20"
    assert echo.request("GET", "/__slow?ms=-1").status == 400
    assert echo.request("GET", "/__big?size=x").status == 400


def test_echo_bad_bodies(echo):
    with socket.create_connection((echo.host, echo.port), timeout=10) as s:
        s.sendall(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")


def test_free_port_is_bindable():
    port = harness.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
