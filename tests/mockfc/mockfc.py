#!/usr/bin/python3
"""Mock FranceConnect v2 / FranceConnect+ OpenID Connect provider, for tests and the demo.

Usage:
  mockfc.py --port N [--host 127.0.0.1] --pki-dir DIR --config clients.json
            [--identities CSV] [--issuer-path /api/v2] [--mode fc|fc-stepup|fcplus]
            [--ready-file F] [--public-host NAME] [--autologin LOGIN] [--jwks-cafile FILE]

One process, HTTPS only (TLS 1.2+), threaded HTTP/1.1 with keep-alive. `--port 0` binds a free port;
the port really bound is printed as `READY <port>` on stdout and written (same line) to the ready
file, atomically, once the socket listens. On start, DIR receives (if absent) a test CA (ca.pem,
ca.key) and a server certificate server.pem / server.key for 127.0.0.1, ::1, localhost (and
--public-host). Issuer: https://<public-host or host>:<port><issuer-path>. One log line per
request on stderr (method, path without query, status): no secrets.

Modes (the levels of assurance, acr):
  fc         FranceConnect: acr_values_supported ["eidas1"]; acr_values absent or "eidas1" gives
             eidas1, anything else is refused with error=invalid_acr.
  fc-stepup  FranceConnect that also grants the FranceConnect+ level (a mock of stepping up from
             FranceConnect to FranceConnect+ on one provider): acr_values_supported
             ["eidas1", "eidas2"]; the acr given is the highest level asked among those (eidas1
             when nothing is asked), amr ["pwd", "mfa"] for eidas2; any other value is refused
             with error=invalid_acr. Tokens are signed, not encrypted (as in fc).
  fcplus     FranceConnect+: acr_values_supported ["eidas2", "eidas3"], id_token and userinfo
             encrypted to the client's keys (see encryption_alg).

clients.json: a list of objects (or {"clients": [...]}); unknown fields are refused.
  client_id, client_secret          strings (secret needed for the client_secret_* methods)
  redirect_uris                     list, matched exactly (byte for byte)
  post_logout_redirect_uris         list, matched exactly
  id_token_signed_response_alg      "ES256" (default) or "RS256"; userinfo uses the same
  token_endpoint_auth_method        "client_secret_post" (default), "client_secret_basic",
                                    "private_key_jwt", or a list of these
  jwks / jwks_uri                   the client's public keys: "use":"sig" (or no use) keys verify
                                    private_key_jwt assertions, "use":"enc" (or no use) keys
                                    encrypt id_token and userinfo
  jwks_uri_cafile                   CA file to fetch an https jwks_uri (default: --jwks-cafile)
  encryption_alg                    RSA-OAEP, RSA-OAEP-256 or ECDH-ES: id_token and userinfo are
                                    signed then encrypted (A256GCM). In --mode fcplus, a client
                                    with keys but no encryption_alg gets the alg of its first
                                    encryption key ("alg" member, else RSA-OAEP-256 / ECDH-ES).
  encryption_enc                    "A256GCM" only
  scopes                            optional allow-list of scopes (else invalid_scope)
  idp_hints                         optional allow-list of idp_hint values (else invalid_idp_hint)
  name                              display name

Identities (default: fc-test-identities.csv beside this file): CSV, '#' lines are comments,
columns login,given_name,family_name,preferred_username,gender,birthdate,idp_birthdate,birthplace,
birthcountry,email,case (the last, free text, may hold unquoted commas). Claims: birthplace ""
is returned as ""; empty email and empty preferred_username are left out.
sub = sha256(client_id + login) in hex + "v1". The identity `desactive` is refused with
error=access_denied.

Endpoints under the issuer path: /.well-known/openid-configuration, /jwks, /authorize, /token,
/userinfo, /session/end, /token/revocation, and the identity page's /interaction/<id>/login?login=X
and /interaction/<id>/abort links (links carry id="login-<login>" and id="cancel").

Test controls (JSON over the same HTTPS port, no authentication, loopback only):
  POST /__mock/scenario {"name": N, ...}   one active misbehaviour ("none" to clear); GET: current.
       Extra members: error_redirect: "error" (default access_denied), "error_description";
       wrong_iss / wrong_iss_param: "value" (default issuer + "/"); token_slow: "seconds"
       (default 10); token_error: "status" (default 500). rotate_keys rotates the signing keys each
       time it is POSTed; the rotation stays after the scenario is cleared.
  POST /__mock/autologin {"login": L}     next authorize requests answer at once as L ("none" or
                                          null: show the page again). GET: current.
  GET  /__mock/log[?since=SEQ]            list of request records: {"seq", "time", "method",
       "path", "endpoint", "params" (name -> value, a list when repeated; secrets "<redacted>"),
       "status", ...}; token: "client_auth", "client_id", "outcome"; userinfo: "token_valid";
       session/end: "id_token_hint_valid", "client_id", "sub".
  POST /__mock/reset                      scenario none, autologin back to --autologin, log, codes,
                                          tokens and clock cleared (signing keys are kept).
  POST /__mock/clock {"advance": S} or {"offset": S}; GET: current offset. Shifts the mock's clock
       (code / token expiry, iat, exp) without waiting.
"""

import argparse
import base64
import collections
import csv
import hashlib
import hmac
import html
import http.client
import http.server
import json
import os
import re
import secrets
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import minijose as jose  # noqa: E402
import pki  # noqa: E402

DEFAULT_IDENTITIES = os.path.join(HERE, "fc-test-identities.csv")

CODE_LIFETIME = 30
ACCESS_TOKEN_LIFETIME = 60
ID_TOKEN_LIFETIME = 60
INTERACTION_LIFETIME = 600
MAX_BODY = 64 * 1024
MAX_LOG = 2000

AUTHORIZE_PARAMS = frozenset(["response_type", "client_id", "redirect_uri", "scope", "state",
                              "nonce", "acr_values", "claims", "prompt", "idp_hint",
                              "ui_locales"])
SESSION_END_PARAMS = frozenset(["id_token_hint", "post_logout_redirect_uri", "state",
                                "ui_locales"])
SECRET_PARAMS = frozenset(["client_secret", "client_assertion", "code", "id_token_hint",
                           "token", "access_token", "refresh_token"])

SIGNING_ALGS = ("ES256", "RS256")
AUTH_METHODS = ("client_secret_post", "client_secret_basic", "private_key_jwt")
ENCRYPTION_ALGS = ("RSA-OAEP", "RSA-OAEP-256", "ECDH-ES")
ASSERTION_ALGS = ("ES256", "RS256", "PS256")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# per mode, the levels of assurance (acr) the provider grants, lowest first
ACR_SUPPORTED = {"fc": ["eidas1"], "fc-stepup": ["eidas1", "eidas2"], "fcplus": ["eidas2", "eidas3"]}

CLAIM_SCOPES = ("given_name", "family_name", "birthdate", "gender", "birthplace", "birthcountry",
                "email", "preferred_username", "idp_birthdate")
SCOPE_ALIASES = {
    "profile": ("given_name", "family_name", "birthdate", "gender", "preferred_username"),
    "birth": ("birthplace", "birthcountry"),
    "identite_pivot": ("given_name", "family_name", "birthdate", "gender", "birthplace",
                       "birthcountry"),
}
ALL_SCOPES = ("openid",) + CLAIM_SCOPES + tuple(SCOPE_ALIASES) + ("amr",)
IDENTITY_COLUMNS = ("login", "given_name", "family_name", "preferred_username", "gender",
                    "birthdate", "idp_birthdate", "birthplace", "birthcountry", "email", "case")

SCENARIOS = {
    "none": "normal behaviour",
    "bad_signature": "id_token signature altered",
    "wrong_iss": "id_token iss differs from the issuer",
    "wrong_aud": "id_token aud is another client",
    "expired": "id_token exp in the past beyond any leeway",
    "iat_future": "id_token iat 10 minutes in the future",
    "iat_old": "id_token iat one day old (exp still in the future)",
    "missing_sub": "id_token without sub",
    "missing_iat": "id_token without iat",
    "missing_nonce": "id_token without nonce",
    "wrong_nonce": "id_token nonce differs",
    "alg_none": "id_token with alg none and no signature",
    "hs256_pubkey": "id_token HS256 with the public key PEM as secret",
    "unknown_kid": "id_token signed with a key never published",
    "rotate_keys": "new signing keys, published from the next JWKS fetch on",
    "userinfo_sub_mismatch": "userinfo sub differs from the id_token's",
    "userinfo_unsigned": "userinfo as plain JSON",
    "userinfo_bad_signature": "userinfo signature altered",
    "token_slow": "token endpoint sleeps before answering",
    "token_error": "token endpoint answers 500",
    "duplicate_params": "callback repeats state and code",
    "error_redirect": "authorize redirects back with an error",
    "wrong_iss_param": "callback iss differs from the issuer",
    "acr_low": "acr below the level asked (fcplus: eidas1; fc: eidas0; fc-stepup: one below)",
    "discovery_down": "503 on discovery and JWKS",
    "fcplus_unencrypted": "id_token and userinfo signed but not encrypted",
    "logout_drop_state": "session/end redirects back without state",
    "logout_error_page": "session/end shows an error page (FC session expired)",
}
SCENARIO_PARAMS = {
    "error_redirect": ("error", "error_description"),
    "wrong_iss": ("value",),
    "wrong_iss_param": ("value",),
    "token_slow": ("seconds",),
    "token_error": ("status",),
}
ERROR_DESCRIPTIONS = {
    "access_denied": "User auth aborted",
    "invalid_scope": "Requested scope is not allowed",
    "invalid_request": "Invalid request",
    "server_error": "Internal server error",
    "temporarily_unavailable": "Service temporarily unavailable",
    "invalid_acr": "acr_values not supported",
}


class ConfigError(Exception):
    pass


class OAuthError(Exception):
    def __init__(self, status, error, description, headers=()):
        super().__init__(description)
        self.status, self.error, self.description = status, error, description
        self.headers = list(headers)


def log_line(text):
    sys.stderr.write("%s mockfc %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), text))
    sys.stderr.flush()


# ---------------------------------------------------------------- configuration

def load_identities(path):
    identities = collections.OrderedDict()
    with open(path, encoding="utf-8", newline="") as f:
        lines = [line for line in f if line.strip() and not line.startswith("#")]
    for row in csv.reader(lines):
        if len(row) > len(IDENTITY_COLUMNS):  # the free-text "case" column may hold commas
            row = row[:len(IDENTITY_COLUMNS) - 1] + [",".join(row[len(IDENTITY_COLUMNS) - 1:])]
        if len(row) != len(IDENTITY_COLUMNS):
            raise ConfigError("%s: %d columns instead of %d in %r"
                              % (path, len(row), len(IDENTITY_COLUMNS), row[:1]))
        ident = dict(zip(IDENTITY_COLUMNS, row))
        if not ident["login"] or ident["login"] in identities:
            raise ConfigError("%s: empty or duplicate login %r" % (path, ident["login"]))
        identities[ident["login"]] = ident
    if not identities:
        raise ConfigError("%s: no identity" % path)
    return identities


class Client:
    FIELDS = frozenset(["client_id", "client_secret", "redirect_uris", "post_logout_redirect_uris",
                        "id_token_signed_response_alg", "token_endpoint_auth_method", "jwks",
                        "jwks_uri", "jwks_uri_cafile", "encryption_alg", "encryption_enc",
                        "scopes", "idp_hints", "name", "backchannel_logout_uri"])

    def __init__(self, d, mode, default_cafile):
        if not isinstance(d, dict):
            raise ConfigError("a client is not an object")
        unknown = set(d) - self.FIELDS
        if unknown:
            raise ConfigError("client %r: unknown fields %s" % (d.get("client_id"),
                                                                sorted(unknown)))
        self.id = d.get("client_id")
        if not isinstance(self.id, str) or not self.id:
            raise ConfigError("client_id missing")
        self.secret = d.get("client_secret")
        self.redirect_uris = self._strlist(d, "redirect_uris", True)
        self.post_logout_redirect_uris = self._strlist(d, "post_logout_redirect_uris", False)
        self.alg = d.get("id_token_signed_response_alg", "ES256")
        if self.alg not in SIGNING_ALGS:
            raise ConfigError("client %s: unsupported alg %r" % (self.id, self.alg))
        methods = d.get("token_endpoint_auth_method", "client_secret_post")
        self.methods = [methods] if isinstance(methods, str) else methods
        if not isinstance(self.methods, list) or not self.methods or \
                any(m not in AUTH_METHODS for m in self.methods):
            raise ConfigError("client %s: bad token_endpoint_auth_method" % self.id)
        if any(m.startswith("client_secret") for m in self.methods) and \
                (not isinstance(self.secret, str) or not self.secret):
            raise ConfigError("client %s: client_secret needed" % self.id)
        self.jwks = d.get("jwks")
        if self.jwks is not None and (not isinstance(self.jwks, dict) or
                                      not isinstance(self.jwks.get("keys"), list)):
            raise ConfigError("client %s: jwks is not a JWKS object" % self.id)
        self.jwks_uri = d.get("jwks_uri")
        self.jwks_cafile = d.get("jwks_uri_cafile", default_cafile)
        if "private_key_jwt" in self.methods and self.jwks is None and not self.jwks_uri:
            raise ConfigError("client %s: private_key_jwt needs jwks or jwks_uri" % self.id)
        self.encryption_alg = d.get("encryption_alg")
        if self.encryption_alg is not None and self.encryption_alg not in ENCRYPTION_ALGS:
            raise ConfigError("client %s: unsupported encryption_alg" % self.id)
        if d.get("encryption_enc", "A256GCM") != "A256GCM":
            raise ConfigError("client %s: encryption_enc must be A256GCM" % self.id)
        self.encrypts = self.encryption_alg is not None or \
            (mode == "fcplus" and (self.jwks is not None or bool(self.jwks_uri)))
        if self.encrypts and self.jwks is None and not self.jwks_uri:
            raise ConfigError("client %s: encryption needs jwks or jwks_uri" % self.id)
        self.scopes = d.get("scopes")
        self.idp_hints = d.get("idp_hints")
        self.name = d.get("name", self.id)
        self.backchannel_logout_uri = d.get("backchannel_logout_uri")

    def _strlist(self, d, name, required):
        value = d.get(name, [])
        if not isinstance(value, list) or any(not isinstance(v, str) or not v for v in value):
            raise ConfigError("client %s: %s must be a list of strings" % (self.id, name))
        if required and not value:
            raise ConfigError("client %s: %s is empty" % (self.id, name))
        return list(value)


def load_clients(path, mode, default_cafile):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, dict):
        data = data.get("clients")
    if not isinstance(data, list) or not data:
        raise ConfigError("%s: expected a non-empty list of clients" % path)
    clients = collections.OrderedDict()
    for item in data:
        client = Client(item, mode, default_cafile)
        if client.id in clients:
            raise ConfigError("duplicate client_id %r" % client.id)
        clients[client.id] = client
    return clients


# ---------------------------------------------------------------- HTTP plumbing

class Request:
    def __init__(self, method, target, headers, body):
        self.method, self.headers, self.body = method, headers, body
        split = urllib.parse.urlsplit(target)
        self.path, self.query = split.path, split.query


def response(status, body=b"", ctype=None, headers=()):
    hdrs = list(headers)
    if ctype:
        hdrs.append(("Content-Type", ctype))
    if isinstance(body, str):
        body = body.encode("utf-8")
    return status, hdrs, body


def json_response(status, obj, headers=()):
    return response(status, json.dumps(obj, ensure_ascii=False).encode("utf-8"),
                    "application/json; charset=utf-8", headers)


def oauth_error(exc):
    return json_response(exc.status, {"error": exc.error, "error_description": exc.description},
                         [("Cache-Control", "no-store")] + exc.headers)


def page(status, title, body_html):
    doc = ("<!DOCTYPE html>\n<html lang=\"fr\"><head><meta charset=\"utf-8\">"
           "<title>%s</title></head><body>\n%s\n</body></html>\n"
           % (html.escape(title), body_html))
    return response(status, doc, "text/html; charset=utf-8", [("Cache-Control", "no-store")])


def error_page(code, message, status=400):
    return page(status, "Erreur - FranceConnect (mock)",
                "<h1>Une erreur est survenue</h1>\n<p class=\"error-code\">%s</p>\n"
                "<p class=\"error-message\">%s</p>" % (html.escape(code), html.escape(message)))


def parse_pairs(text, max_fields=64):
    """Query or form text -> list of (name, value); raises ValueError on bad encoding."""
    return urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=False,
                                  errors="strict", max_num_fields=max_fields)


def loggable_params(pairs):
    out = {}
    for name, value in pairs:
        if name in SECRET_PARAMS:
            value = "<redacted>"
        if name in out:
            if not isinstance(out[name], list):
                out[name] = [out[name]]
            out[name].append(value)
        else:
            out[name] = value
    return out


def duplicates(pairs):
    seen, dup = set(), set()
    for name, _ in pairs:
        (dup if name in seen else seen).add(name)
    return sorted(dup)


def add_query(base, pairs):
    return base + ("&" if "?" in base else "?") + urllib.parse.urlencode(pairs)


def redirect(location):
    return response(302, b"", None, [("Location", location), ("Cache-Control", "no-store")])


# ---------------------------------------------------------------- the provider

class SigningKey:
    def __init__(self, alg, published=True):
        self.alg = alg
        self.key = jose.generate_key("EC") if alg == "ES256" else jose.generate_key("RSA")
        prefix = "unpublished" if not published else alg.lower()
        self.kid = "%s-%s" % (prefix, secrets.token_hex(6))

    def jwk(self):
        return jose.public_jwk(self.key, kid=self.kid, alg=self.alg, use="sig")


class MockFC:
    def __init__(self, issuer, mode, clients, identities, autologin=None, jwks_cafile=None):
        self.issuer = issuer
        self.prefix = urllib.parse.urlsplit(issuer).path.rstrip("/")
        self.mode = mode
        self.clients = clients
        self.identities = identities
        self.default_autologin = autologin
        self.jwks_cafile = jwks_cafile
        self.lock = threading.RLock()
        self.published = []          # SigningKey, newest first
        self.current = {}            # alg -> SigningKey
        self.rotate_keys()
        self.unpublished = {alg: SigningKey(alg, published=False) for alg in SIGNING_ALGS}
        self.seq = 0
        self.reset()

    # -- state

    def reset(self):
        with self.lock:
            self.scenario = "none"
            self.scenario_params = {}
            self.autologin = self.default_autologin
            self.clock_offset = 0
            self.log = collections.deque(maxlen=MAX_LOG)
            self.codes = {}
            self.used_codes = collections.OrderedDict()
            self.tokens = {}
            self.interactions = {}
            self.issued_jwe = collections.OrderedDict()
            self.jtis = {}

    def now(self):
        return int(time.time()) + self.clock_offset

    def rotate_keys(self):
        with self.lock:
            fresh = {alg: SigningKey(alg) for alg in SIGNING_ALGS}
            self.current = fresh
            self.published = list(fresh.values()) + self.published[:6]

    def record(self, entry):
        with self.lock:
            self.seq += 1
            entry = dict(entry, seq=self.seq, time=time.time())
            self.log.append(entry)
        return entry

    def _expire(self):
        now = self.now()
        for table in (self.codes, self.tokens, self.interactions):
            for k in [k for k, v in table.items() if v["expires"] < now - 3600]:
                del table[k]
        while len(self.used_codes) > 10000:
            self.used_codes.popitem(last=False)
        for k in [k for k, exp in self.jtis.items() if exp < now - 3600]:
            del self.jtis[k]

    def sub_for(self, client_id, login):
        return hashlib.sha256((client_id + login).encode("utf-8")).hexdigest() + "v1"

    def sid_for(self, client_id, login):
        """The provider session id put in the ID tokens of (client, login)."""
        return hashlib.sha256(("sid:" + client_id + ":" + login).encode("utf-8")).hexdigest()[:32]

    # -- dispatch

    def handle(self, req):
        entry = {"method": req.method, "path": req.path}
        try:
            result = self._route(req, entry)
        except OAuthError as exc:
            entry.setdefault("outcome", exc.error)
            result = oauth_error(exc)
        except Exception as exc:  # a bug in the mock: answer 500, keep serving
            log_line("internal error on %s: %s: %s" % (req.path, type(exc).__name__, exc))
            entry["outcome"] = "internal_error"
            result = error_page("Y500000", "Erreur interne du mock", 500)
        if "endpoint" in entry:
            entry["status"] = result[0]
            self.record(entry)
        return result

    def _route(self, req, entry):
        path = req.path
        if path.startswith("/__mock/"):
            return self.control(req, path[len("/__mock/"):])
        if not path.startswith(self.prefix + "/"):
            return error_page("Y000404", "Page introuvable", 404)
        sub = path[len(self.prefix):]
        routes = {
            "/.well-known/openid-configuration": ("discovery", ("GET", "HEAD"), self.discovery),
            "/jwks": ("jwks", ("GET", "HEAD"), self.jwks),
            "/authorize": ("authorize", ("GET",), self.authorize),
            "/token": ("token", ("POST",), self.token),
            "/userinfo": ("userinfo", ("GET", "POST"), self.userinfo),
            "/session/end": ("session_end", ("GET",), self.session_end),
            "/token/revocation": ("revocation", ("POST",), self.revocation),
        }
        if sub in routes:
            name, methods, fn = routes[sub]
            entry["endpoint"] = name
            if req.method not in methods:
                return response(405, b"", None, [("Allow", ", ".join(methods))])
            return fn(req, entry)
        m = re.match(r"^/interaction/([A-Za-z0-9_-]{1,64})/(login|abort)$", sub)
        if m:
            entry["endpoint"] = "interaction"
            if req.method != "GET":
                return response(405, b"", None, [("Allow", "GET")])
            return self.interaction(req, entry, m.group(1), m.group(2))
        return error_page("Y000404", "Page introuvable", 404)

    # -- discovery and keys

    def discovery(self, req, entry):
        if self.scenario == "discovery_down":
            return json_response(503, {"error": "temporarily_unavailable"})
        methods = ["client_secret_post", "private_key_jwt"]
        if any("client_secret_basic" in c.methods for c in self.clients.values()):
            methods.insert(1, "client_secret_basic")
        doc = {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "userinfo_endpoint": self.issuer + "/userinfo",
            "end_session_endpoint": self.issuer + "/session/end",
            "revocation_endpoint": self.issuer + "/token/revocation",
            "jwks_uri": self.issuer + "/jwks",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["pairwise"],
            "scopes_supported": list(ALL_SCOPES),
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr",
                                 "amr", "at_hash"] + list(CLAIM_SCOPES),
            "acr_values_supported": ACR_SUPPORTED[self.mode],
            "id_token_signing_alg_values_supported": list(SIGNING_ALGS),
            "userinfo_signing_alg_values_supported": list(SIGNING_ALGS),
            "token_endpoint_auth_methods_supported": methods,
            "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGS),
            "claims_parameter_supported": True,
            "request_parameter_supported": False,
            "request_uri_parameter_supported": False,
            "require_request_uri_registration": False,
            "prompt_values_supported": ["login", "consent"],
            "ui_locales_supported": ["fr"],
        }
        if self.mode == "fcplus":
            doc.update({
                "id_token_encryption_alg_values_supported": list(ENCRYPTION_ALGS),
                "id_token_encryption_enc_values_supported": ["A256GCM"],
                "userinfo_encryption_alg_values_supported": list(ENCRYPTION_ALGS),
                "userinfo_encryption_enc_values_supported": ["A256GCM"],
            })
        return json_response(200, doc)

    def jwks(self, req, entry):
        if self.scenario == "discovery_down":
            return json_response(503, {"error": "temporarily_unavailable"})
        with self.lock:
            keys = [k.jwk() for k in self.published]
        entry["kids"] = [k["kid"] for k in keys]
        return json_response(200, {"keys": keys})

    # -- authorize

    def authorize(self, req, entry):
        try:
            pairs = parse_pairs(req.query)
        except ValueError:
            return error_page("Y000400", "Requête mal formée")
        entry["params"] = loggable_params(pairs)
        unknown = sorted({n for n, _ in pairs} - AUTHORIZE_PARAMS)
        if unknown:
            entry["outcome"] = "unknown_parameter"
            return error_page("Y000400", "Paramètre non autorisé : %s" % ", ".join(unknown))
        dup = duplicates(pairs)
        if dup:
            entry["outcome"] = "duplicate_parameter"
            return error_page("Y000400", "Paramètre répété : %s" % ", ".join(dup))
        p = dict(pairs)
        client = self.clients.get(p.get("client_id", ""))
        if client is None:
            entry["outcome"] = "unknown_client"
            return error_page("Y000400", "Fournisseur de service inconnu")
        redirect_uri = p.get("redirect_uri")
        if redirect_uri not in client.redirect_uris:
            entry["outcome"] = "bad_redirect_uri"
            return error_page("Y000400", "redirect_uri non enregistrée")
        if p.get("response_type") != "code":
            entry["outcome"] = "bad_response_type"
            return error_page("Y000400", "response_type doit valoir code")
        scopes = [s for s in p.get("scope", "").split(" ") if s]
        if "openid" not in scopes:
            entry["outcome"] = "no_openid_scope"
            return error_page("Y000400", "Le scope openid est obligatoire")
        state = p.get("state", "")
        if not state:
            entry["outcome"] = "missing_state"
            return error_page("Y000400", "Paramètre state manquant")
        nonce = p.get("nonce", "")
        if len(nonce) < 22:
            entry["outcome"] = "short_nonce"
            return error_page("Y000400", "Paramètre nonce manquant ou trop court")
        if "prompt" in p:
            prompts = p["prompt"].split(" ")
            if any(v not in ("login", "consent") for v in prompts):
                entry["outcome"] = "bad_prompt"
                return error_page("Y000400", "Valeur de prompt non autorisée")
        claims = None
        if "claims" in p:
            try:
                claims = json.loads(p["claims"])
            except ValueError:
                claims = None
            if not isinstance(claims, dict):
                entry["outcome"] = "bad_claims"
                return error_page("Y000400", "Paramètre claims invalide")

        def back_with_error(error, description):
            entry["outcome"] = error
            return redirect(add_query(redirect_uri, [("error", error),
                                                     ("error_description", description),
                                                     ("state", state), ("iss", self.issuer)]))

        acr = self._acr_for(p.get("acr_values"))
        if acr is None:
            return back_with_error("invalid_acr", ERROR_DESCRIPTIONS["invalid_acr"])
        if any(s not in ALL_SCOPES for s in scopes) or \
                (client.scopes is not None and any(s not in client.scopes for s in scopes)):
            return back_with_error("invalid_scope", ERROR_DESCRIPTIONS["invalid_scope"])
        if "idp_hint" in p and client.idp_hints is not None and \
                p["idp_hint"] not in client.idp_hints:
            return back_with_error("invalid_idp_hint", "idp_hint not allowed")
        with self.lock:
            scenario, sparams = self.scenario, dict(self.scenario_params)
            autologin = self.autologin
        if scenario == "error_redirect":
            error = sparams.get("error", "access_denied")
            return back_with_error(error, sparams.get("error_description",
                                                      ERROR_DESCRIPTIONS.get(error,
                                                                             "Unexpected error")))
        pending = {"client_id": client.id, "redirect_uri": redirect_uri, "state": state,
                   "nonce": nonce, "acr": acr, "scopes": scopes, "claims": claims,
                   "expires": self.now() + INTERACTION_LIFETIME}
        if autologin:
            entry["outcome"] = "autologin"
            return self._complete(pending, autologin, entry)
        uid = secrets.token_urlsafe(16)
        with self.lock:
            self._expire()
            self.interactions[uid] = pending
        entry["outcome"] = "login_page"
        return self._identity_page(client, uid)

    def _acr_for(self, acr_values):
        if self.mode == "fc-stepup":
            levels = ["eidas1"] if acr_values is None else acr_values.split(" ")
            if not levels or any(v not in ACR_SUPPORTED["fc-stepup"] for v in levels):
                return None
            return "eidas2" if "eidas2" in levels else "eidas1"
        if self.mode == "fc":
            if acr_values is None or acr_values == "eidas1":
                return "eidas1"
            return None
        if acr_values is None:
            return "eidas2"
        levels = acr_values.split(" ")
        if not levels or any(v not in ("eidas2", "eidas3") for v in levels):
            return None
        return "eidas2" if "eidas2" in levels else "eidas3"

    def _identity_page(self, client, uid):
        base = "%s/interaction/%s" % (self.prefix, uid)
        items = []
        for login, ident in self.identities.items():
            items.append("<li><a class=\"identity\" id=\"login-%s\" data-login=\"%s\" href=\"%s\">"
                         "%s %s</a> <small>%s</small></li>"
                         % (html.escape(login), html.escape(login),
                            html.escape("%s/login?%s" % (base, urllib.parse.urlencode(
                                {"login": login}))),
                            html.escape(ident["given_name"]), html.escape(ident["family_name"]),
                            html.escape(ident["case"])))
        body = ("<h1>FranceConnect (mock)</h1>\n"
                "<p>Connexion à %s : choisissez une identité.</p>\n"
                "<ul class=\"identities\">\n%s\n</ul>\n<p><a id=\"cancel\" href=\"%s\">Annuler</a>"
                "</p>" % (html.escape(client.name), "\n".join(items),
                          html.escape(base + "/abort")))
        return page(200, "FranceConnect (mock) - choix de l'identité", body)

    def interaction(self, req, entry, uid, action):
        with self.lock:
            pending = self.interactions.pop(uid, None)
        if pending is None or pending["expires"] < self.now():
            entry["outcome"] = "unknown_interaction"
            return error_page("Y000404", "Session de connexion inconnue ou expirée")
        if action == "abort":
            entry["outcome"] = "access_denied"
            return redirect(add_query(pending["redirect_uri"], [
                ("error", "access_denied"), ("error_description", "User auth aborted"),
                ("state", pending["state"]), ("iss", self.issuer)]))
        try:
            pairs = parse_pairs(req.query)
        except ValueError:
            pairs = []
        entry["params"] = loggable_params(pairs)
        login = dict(pairs).get("login", "")
        return self._complete(pending, login, entry)

    def _complete(self, pending, login, entry):
        ident = self.identities.get(login)
        if ident is None:
            entry["outcome"] = "unknown_identity"
            return error_page("Y000400", "Identité inconnue")
        entry["login"] = login
        if login == "desactive":
            entry["outcome"] = "access_denied"
            return redirect(add_query(pending["redirect_uri"], [
                ("error", "access_denied"), ("error_description", "User account disabled"),
                ("state", pending["state"]), ("iss", self.issuer)]))
        code = secrets.token_urlsafe(32)
        now = self.now()
        grant = dict(pending, login=login, auth_time=now, expires=now + CODE_LIFETIME)
        with self.lock:
            self._expire()
            self.codes[code] = grant
            scenario, sparams = self.scenario, dict(self.scenario_params)
        iss = self.issuer
        if scenario == "wrong_iss_param":
            iss = sparams.get("value", self.issuer + "/")
        params = [("code", code), ("state", pending["state"]), ("iss", iss)]
        if scenario == "duplicate_params":
            params += [("state", pending["state"]), ("code", code)]
        entry.setdefault("outcome", "code")
        return redirect(add_query(pending["redirect_uri"], params))

    # -- token

    def _form(self, req):
        ctype = req.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise OAuthError(400, "invalid_request", "form body expected")
        try:
            pairs = parse_pairs(req.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise OAuthError(400, "invalid_request", "malformed form body")
        return pairs

    def _client_keys(self, client, purpose):
        jwks = client.jwks
        if jwks is None and client.jwks_uri:
            ctx = ssl.create_default_context(cafile=client.jwks_cafile)
            try:
                with urllib.request.urlopen(client.jwks_uri, timeout=5, context=ctx) as resp:
                    jwks = json.loads(resp.read(1024 * 1024).decode("utf-8"))
            except (OSError, ValueError) as exc:
                log_line("cannot fetch client %s jwks_uri: %s" % (client.id, exc))
                raise OAuthError(500, "server_error", "client jwks_uri unavailable")
        keys = []
        for jwk in (jwks or {}).get("keys", []) if isinstance(jwks, dict) else []:
            if not isinstance(jwk, dict) or jwk.get("use", purpose) != purpose:
                continue
            try:
                keys.append((jwk, jose.key_from_jwk(jwk)))
            except jose.JoseError:
                continue
        return keys

    def _authenticate(self, req, form, entry):
        p = dict(form)
        auth = req.headers.get("Authorization")
        used = []
        if auth is not None:
            used.append("client_secret_basic" if auth[:6].lower() == "basic " else "other")
        if "client_secret" in p:
            used.append("client_secret_post")
        if "client_assertion" in p or "client_assertion_type" in p:
            used.append("private_key_jwt")
        entry["client_auth"] = used[0] if len(used) == 1 else used
        if len(used) != 1 or used[0] == "other":
            raise OAuthError(401, "invalid_client",
                             "exactly one client authentication method is required")
        method = used[0]
        if method == "client_secret_basic":
            hdrs = [("WWW-Authenticate", 'Basic realm="mockfc"')]
            try:
                raw = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
                cid, secret = raw.split(":", 1)
                cid, secret = urllib.parse.unquote_plus(cid), urllib.parse.unquote_plus(secret)
            except (ValueError, UnicodeDecodeError):
                raise OAuthError(401, "invalid_client", "malformed Basic credentials", hdrs)
            client = self.clients.get(cid)
            entry["client_id"] = cid
            if client is None:
                raise OAuthError(401, "invalid_client", "unknown client", hdrs)
            if method not in client.methods:
                raise OAuthError(401, "invalid_client",
                                 "client_secret_basic is not enabled for this client", hdrs)
            if not hmac.compare_digest(secret.encode("utf-8"), client.secret.encode("utf-8")):
                raise OAuthError(401, "invalid_client", "bad client credentials", hdrs)
        elif method == "client_secret_post":
            cid = p.get("client_id", "")
            entry["client_id"] = cid
            client = self.clients.get(cid)
            if client is None or method not in client.methods or \
                    not hmac.compare_digest(p["client_secret"].encode("utf-8"),
                                            client.secret.encode("utf-8")):
                raise OAuthError(401, "invalid_client", "bad client credentials")
        else:
            client = self._check_assertion(p, entry)
        if "client_id" in p and p["client_id"] != client.id:
            raise OAuthError(401, "invalid_client", "client_id does not match the credentials")
        return client

    def _check_assertion(self, p, entry):
        if p.get("client_assertion_type") != ASSERTION_TYPE or "client_assertion" not in p:
            raise OAuthError(401, "invalid_client", "bad client_assertion_type")
        try:
            _, payload, _, _ = jose.jws_split(p["client_assertion"])
            claims = json.loads(payload.decode("utf-8"))
        except (jose.JoseError, UnicodeDecodeError, ValueError):
            raise OAuthError(401, "invalid_client", "malformed client_assertion")
        if not isinstance(claims, dict):
            raise OAuthError(401, "invalid_client", "malformed client_assertion")
        cid = claims.get("iss")
        entry["client_id"] = cid
        client = self.clients.get(cid) if isinstance(cid, str) else None
        if client is None or "private_key_jwt" not in client.methods:
            raise OAuthError(401, "invalid_client", "unknown client or method not enabled")
        keys = [(jwk.get("kid"), key) for jwk, key in self._client_keys(client, "sig")]
        try:
            jose.jws_verify(p["client_assertion"], keys, ASSERTION_ALGS)
        except jose.JoseError:
            raise OAuthError(401, "invalid_client", "client_assertion signature invalid")
        now = self.now()
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        exp = claims.get("exp")
        jti = claims.get("jti")
        if claims.get("sub") != cid:
            raise OAuthError(401, "invalid_client", "client_assertion sub must equal iss")
        if self.issuer + "/token" not in auds and self.issuer not in auds:
            raise OAuthError(401, "invalid_client", "client_assertion aud is wrong")
        if not isinstance(exp, (int, float)) or exp < now - 5 or exp > now + 600:
            raise OAuthError(401, "invalid_client", "client_assertion expired or too long")
        if not isinstance(jti, str) or not jti:
            raise OAuthError(401, "invalid_client", "client_assertion jti missing")
        with self.lock:
            if (cid, jti) in self.jtis:
                raise OAuthError(401, "invalid_client", "client_assertion replayed")
            self.jtis[(cid, jti)] = exp
        return client

    def token(self, req, entry):
        with self.lock:
            scenario, sparams = self.scenario, dict(self.scenario_params)
        if scenario == "token_error":
            entry["outcome"] = "scenario_token_error"
            return json_response(int(sparams.get("status", 500)), {"error": "server_error"})
        if scenario == "token_slow":
            time.sleep(float(sparams.get("seconds", 10)))
        form = self._form(req)
        entry["params"] = loggable_params(form)
        if duplicates(form):
            raise OAuthError(400, "invalid_request", "repeated parameter")
        client = self._authenticate(req, form, entry)
        p = dict(form)
        if p.get("grant_type") != "authorization_code":
            raise OAuthError(400, "unsupported_grant_type", "only authorization_code")
        code = p.get("code", "")
        with self.lock:
            grant = self.codes.pop(code, None)
            if grant is None:
                raise OAuthError(400, "invalid_grant", "code already used" if code in
                                 self.used_codes else "unknown code")
            self.used_codes[code] = True
        if grant["expires"] < self.now():
            raise OAuthError(400, "invalid_grant", "code expired")
        if grant["client_id"] != client.id:
            raise OAuthError(400, "invalid_grant", "code issued to another client")
        if p.get("redirect_uri") != grant["redirect_uri"]:
            raise OAuthError(400, "invalid_grant", "redirect_uri differs")
        now = self.now()
        access_token = secrets.token_urlsafe(32)
        sub = self.sub_for(client.id, grant["login"])
        with self.lock:
            self.tokens[access_token] = {"client_id": client.id, "login": grant["login"],
                                         "scopes": grant["scopes"], "sub": sub,
                                         "expires": now + ACCESS_TOKEN_LIFETIME}
        id_token = self._id_token(client, grant, sub, access_token, now, scenario, sparams)
        entry["outcome"] = "ok"
        entry["client_id"] = client.id
        return json_response(200, {"access_token": access_token, "token_type": "Bearer",
                                   "expires_in": ACCESS_TOKEN_LIFETIME, "id_token": id_token,
                                   "scope": " ".join(grant["scopes"])},
                             [("Cache-Control", "no-store"), ("Pragma", "no-cache")])

    def _id_token(self, client, grant, sub, access_token, now, scenario, sparams):
        acr = grant["acr"]
        if scenario == "acr_low":
            acr = "eidas1" if self.mode == "fcplus" or acr == "eidas2" else "eidas0"
        iat = now
        if scenario == "expired":
            iat = now - 300
        elif scenario == "iat_future":
            iat = now + 600
        exp = iat + ID_TOKEN_LIFETIME
        if scenario == "iat_old":
            iat, exp = now - 86400, now + ID_TOKEN_LIFETIME
        digest = hashlib.sha256(access_token.encode("ascii")).digest()
        claims = {"iss": self.issuer, "sub": sub, "aud": client.id, "exp": exp, "iat": iat,
                  "auth_time": min(grant["auth_time"], iat), "nonce": grant["nonce"], "acr": acr,
                  "amr": ["pwd"] if grant["acr"] == "eidas1" else ["pwd", "mfa"],
                  "at_hash": jose.b64u_encode(digest[:16]),
                  "sid": self.sid_for(client.id, grant["login"])}
        if scenario == "wrong_iss":
            claims["iss"] = sparams.get("value", self.issuer + "/")
        elif scenario == "wrong_aud":
            claims["aud"] = "another-client-" + client.id
        elif scenario == "wrong_nonce":
            claims["nonce"] = secrets.token_urlsafe(32)
        elif scenario in ("missing_sub", "missing_iat", "missing_nonce"):
            del claims[scenario[len("missing_"):]]
        token = self._sign(claims, client, scenario, "id_token")
        return self._maybe_encrypt(token, client, scenario)

    def _sign(self, claims, client, scenario, purpose):
        alg = client.alg
        with self.lock:
            key = self.current[alg]
        if purpose == "id_token":
            if scenario == "alg_none":
                return jose.jws_sign(claims, None, "none")
            if scenario == "hs256_pubkey":
                return jose.jws_sign(claims, jose.public_pem(key.key), "HS256", kid=key.kid)
            if scenario == "unknown_kid":
                key = self.unpublished[alg]
        token = jose.jws_sign(claims, key.key, alg, kid=key.kid)
        if (purpose == "id_token" and scenario == "bad_signature") or \
                (purpose == "userinfo" and scenario == "userinfo_bad_signature"):
            head, body, sig = token.split(".")
            raw = bytearray(jose.b64u_decode(sig))
            raw[len(raw) // 3] ^= 0x01
            token = "%s.%s.%s" % (head, body, jose.b64u_encode(bytes(raw)))
        return token

    def _maybe_encrypt(self, token, client, scenario):
        if not client.encrypts or scenario == "fcplus_unencrypted":
            return token
        keys = self._client_keys(client, "enc")
        chosen = None
        for jwk, key in keys:
            alg = client.encryption_alg or jwk.get("alg") or \
                ("RSA-OAEP-256" if jwk.get("kty") == "RSA" else "ECDH-ES")
            if alg not in ENCRYPTION_ALGS or jwk.get("alg", alg) != alg:
                continue
            if (alg == "ECDH-ES") != (jwk.get("kty") == "EC"):
                continue
            chosen = (jwk, key, alg)
            break
        if chosen is None:
            log_line("client %s: no encryption key fits" % client.id)
            raise OAuthError(500, "server_error", "no client encryption key fits")
        jwk, key, alg = chosen
        jwe = jose.jwe_encrypt(token.encode("ascii"), key, alg, "A256GCM",
                               kid=jwk.get("kid"), cty="JWT")
        with self.lock:
            self.issued_jwe[jwe] = token
            while len(self.issued_jwe) > 1000:
                self.issued_jwe.popitem(last=False)
        return jwe

    # -- userinfo

    def userinfo(self, req, entry):
        auth = req.headers.get("Authorization", "")
        bearer = [("WWW-Authenticate", 'Bearer error="invalid_token"')]
        if req.method == "POST":
            self._form(req)  # reads and checks the body; the token travels in the header
        if auth[:7].lower() != "bearer ":
            entry["auth"] = "none"
            entry["token_valid"] = False
            raise OAuthError(401, "invalid_token", "Bearer token required",
                             [("WWW-Authenticate", "Bearer")])
        entry["auth"] = "bearer"
        with self.lock:
            tok = self.tokens.get(auth[7:].strip())
            scenario = self.scenario
        if tok is None or tok["expires"] < self.now():
            entry["token_valid"] = False
            raise OAuthError(401, "invalid_token", "unknown or expired access token", bearer)
        entry["token_valid"] = True
        entry["client_id"] = tok["client_id"]
        client = self.clients[tok["client_id"]]
        ident = self.identities[tok["login"]]
        wanted = set()
        for scope in tok["scopes"]:
            if scope in CLAIM_SCOPES:
                wanted.add(scope)
            wanted.update(SCOPE_ALIASES.get(scope, ()))
        claims = {"sub": tok["sub"]}
        for name in CLAIM_SCOPES:
            if name not in wanted:
                continue
            value = ident[name]
            if value == "" and name in ("email", "preferred_username"):
                continue
            claims[name] = value
        if scenario == "userinfo_sub_mismatch":
            claims["sub"] = self.sub_for(client.id, tok["login"] + "-other")
        if scenario == "userinfo_unsigned":
            return json_response(200, claims, [("Cache-Control", "no-store")])
        claims.update({"iss": self.issuer, "aud": client.id, "iat": self.now()})
        token = self._maybe_encrypt(self._sign(claims, client, scenario, "userinfo"), client,
                                    scenario)
        return response(200, token.encode("ascii"), "application/jwt",
                        [("Cache-Control", "no-store")])

    # -- logout and revocation

    def _check_hint(self, hint):
        """-> (valid, client_id, sub) for an id_token this provider issued (expiry ignored)."""
        if not hint:
            return False, None, None
        with self.lock:
            inner = self.issued_jwe.get(hint)
            keys = [(k.kid, k.key) for k in self.published] + \
                [(k.kid, k.key) for k in self.unpublished.values()]
        token = inner if inner is not None else hint
        try:
            _, payload = jose.jws_verify(token, keys, SIGNING_ALGS)
            claims = json.loads(payload.decode("utf-8"))
        except (jose.JoseError, UnicodeDecodeError, ValueError):
            return False, None, None
        if not isinstance(claims, dict) or claims.get("iss") != self.issuer or \
                claims.get("aud") not in self.clients:
            return False, None, None
        return True, claims.get("aud"), claims.get("sub")

    def session_end(self, req, entry):
        try:
            pairs = parse_pairs(req.query)
        except ValueError:
            return error_page("Y000400", "Requête mal formée")
        entry["params"] = loggable_params(pairs)
        valid, cid, sub = self._check_hint(dict(pairs).get("id_token_hint"))
        entry.update({"id_token_hint_valid": valid, "client_id": cid, "sub": sub})
        with self.lock:
            scenario = self.scenario
        if duplicates(pairs) or set(dict(pairs)) - SESSION_END_PARAMS:
            entry["outcome"] = "bad_parameters"
            return error_page("Y000400", "Paramètres de déconnexion invalides")
        if scenario == "logout_error_page":
            entry["outcome"] = "scenario_error_page"
            return error_page("Y000400", "Votre session FranceConnect a expiré")
        if not valid:
            entry["outcome"] = "invalid_id_token_hint"
            return error_page("Y000400", "id_token_hint invalide")
        p = dict(pairs)
        target = p.get("post_logout_redirect_uri")
        if target not in self.clients[cid].post_logout_redirect_uris:
            entry["outcome"] = "bad_post_logout_redirect_uri"
            return error_page("Y000400", "post_logout_redirect_uri non enregistrée")
        params = []
        if p.get("state") and scenario != "logout_drop_state":
            params.append(("state", p["state"]))
        entry["outcome"] = "logged_out"
        return redirect(add_query(target, params) if params else target)

    def revocation(self, req, entry):
        form = self._form(req)
        entry["params"] = loggable_params(form)
        client = self._authenticate(req, form, entry)
        tok = dict(form).get("token", "")
        with self.lock:
            rec = self.tokens.get(tok)
            if rec is not None and rec["client_id"] == client.id:
                del self.tokens[tok]
        entry["outcome"] = "ok"
        return response(200, b"", None, [("Cache-Control", "no-store")])

    # -- test controls

    def control(self, req, name):
        try:
            body = json.loads(req.body.decode("utf-8")) if req.body else {}
        except (UnicodeDecodeError, ValueError):
            return json_response(400, {"error": "body is not JSON"})
        if not isinstance(body, dict):
            return json_response(400, {"error": "body is not a JSON object"})
        if name == "scenario":
            if req.method == "GET":
                with self.lock:
                    return json_response(200, dict(self.scenario_params, name=self.scenario))
            sname = body.get("name")
            if sname not in SCENARIOS:
                return json_response(400, {"error": "unknown scenario", "known": sorted(SCENARIOS)})
            extra = {k: v for k, v in body.items() if k != "name"}
            bad = set(extra) - set(SCENARIO_PARAMS.get(sname, ()))
            if bad:
                return json_response(400, {"error": "unexpected members %s" % sorted(bad)})
            if "error" in extra and (not isinstance(extra["error"], str) or
                                     not re.match(r"^[A-Za-z0-9_.-]{1,64}$", extra["error"])):
                return json_response(400, {"error": "bad error code"})
            if "seconds" in extra and not (isinstance(extra["seconds"], (int, float)) and
                                           0 <= extra["seconds"] <= 120):
                return json_response(400, {"error": "seconds must be in 0..120"})
            if "status" in extra and not (isinstance(extra["status"], int) and
                                          500 <= extra["status"] <= 599):
                return json_response(400, {"error": "status must be in 500..599"})
            with self.lock:
                if sname == "rotate_keys":
                    self.rotate_keys()
                self.scenario, self.scenario_params = sname, extra
            log_line("scenario %s" % sname)
            return json_response(200, dict(extra, name=sname))
        if name == "autologin":
            if req.method == "GET":
                return json_response(200, {"login": self.autologin})
            login = body.get("login")
            if login in (None, "none", ""):
                login = None
            elif login not in self.identities:
                return json_response(400, {"error": "unknown identity"})
            with self.lock:
                self.autologin = login
            return json_response(200, {"login": login})
        if name == "log" and req.method == "GET":
            since = 0
            q = dict(urllib.parse.parse_qsl(req.query))
            if q.get("since", "").isdigit():
                since = int(q["since"])
            with self.lock:
                return json_response(200, [e for e in self.log if e["seq"] > since])
        if name == "backchannel" and req.method == "POST":
            return self.backchannel(body)
        if name == "reset" and req.method == "POST":
            self.reset()
            return json_response(200, {"reset": True})
        if name == "clock":
            if req.method == "POST":
                value = body.get("advance", body.get("offset"))
                if not isinstance(value, int) or isinstance(value, bool):
                    return json_response(400, {"error": "advance or offset: integer seconds"})
                with self.lock:
                    self.clock_offset = (self.clock_offset + value) if "advance" in body \
                        else value
            return json_response(200, {"offset": self.clock_offset})
        return json_response(404, {"error": "unknown control"})


    def backchannel(self, body):
        """OpenID Connect Back-Channel Logout 1.0: builds a logout token for
        {client_id, login | sub, sid?} and POSTs it to `uri` (or the client's
        backchannel_logout_uri). Test knobs: nonce (adds one), unsigned
        (alg none), jti (given instead of a random one), no_events, send
        false (only return it). Answers {token, status, body}."""
        client = self.clients.get(body.get("client_id", ""))
        if client is None:
            return json_response(400, {"error": "unknown client_id"})
        sub = body.get("sub")
        if sub is None and body.get("login") is not None:
            sub = self.sub_for(client.id, body["login"])
        now = self.now()
        claims = {"iss": self.issuer, "aud": client.id, "iat": now, "exp": now + 120,
                  "jti": body.get("jti") or secrets.token_urlsafe(16)}
        if not body.get("no_events"):
            claims["events"] = {"http://schemas.openid.net/event/backchannel-logout": {}}
        if sub is not None:
            claims["sub"] = sub
        if body.get("sid") is not None:
            claims["sid"] = body["sid"]
        if body.get("nonce"):
            claims["nonce"] = secrets.token_urlsafe(16)
        if body.get("unsigned"):
            token = jose.jws_sign(claims, None, "none")
        else:
            token = self._sign(claims, client, None, "logout_token")
        out = {"token": token, "claims": claims}
        uri = body.get("uri") or client.backchannel_logout_uri
        if body.get("send", True) and uri:
            data = urllib.parse.urlencode({"logout_token": token}).encode("ascii")
            u = urllib.parse.urlsplit(uri)
            # *.localhost names (the tests') are this machine, resolver or not
            addr = "127.0.0.1" if u.hostname.endswith(".localhost") else u.hostname
            cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
            c = cls(addr, u.port or (443 if u.scheme == "https" else 80), timeout=10)
            try:
                c.request("POST", (u.path or "/") + ("?" + u.query if u.query else ""), body=data,
                          headers={"Host": u.netloc,
                                   "Content-Type": "application/x-www-form-urlencoded"})
                r = c.getresponse()
                out["status"], out["body"] = r.status, r.read().decode("utf-8", "replace")
            finally:
                c.close()
        log_line("backchannel logout token for %s (%s)" % (client.id, out.get("status", "not sent")))
        return json_response(200, out)


# ---------------------------------------------------------------- server

class BodyError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mockfc"
    disable_nagle_algorithm = True
    sys_version = ""

    def version_string(self):
        return self.server_version
    timeout = 60

    def _read_body(self):
        if self.headers.get("Transfer-Encoding") is not None:
            raise BodyError(411, "chunked bodies are not supported; send Content-Length")
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not length.strip().isdigit():
            raise BodyError(400, "bad Content-Length")
        n = int(length)
        if n > MAX_BODY:
            raise BodyError(413, "body too large")
        data = self.rfile.read(n)
        if len(data) != n:
            raise BodyError(400, "truncated body")
        return data

    def _dispatch(self):
        try:
            body = self._read_body()
        except BodyError as exc:
            self.close_connection = True
            self._send((exc.status, [("Content-Type", "text/plain; charset=utf-8")],
                        (str(exc) + "\n").encode("utf-8")))
            return
        req = Request(self.command, self.path, self.headers, body)
        self._send(self.server.app.handle(req))

    def _send(self, resp):
        status, headers, body = resp
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch

    def log_request(self, code="-", size="-"):
        path = urllib.parse.urlsplit(self.path).path if hasattr(self, "path") else "-"
        log_line("%s %s %s" % (getattr(self, "command", "-"), path[:200], code))

    def log_error(self, fmt, *args):
        log_line("request error: %s" % (args[0] if args and isinstance(args[0], int) else fmt))


class TLSServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address, family, sslctx, app):
        self.address_family = family
        self.sslctx = sslctx
        self.app = app
        super().__init__(address, Handler)

    def finish_request(self, request, client_address):
        request.settimeout(30)
        try:
            tls = self.sslctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log_line("TLS handshake failed: %s" % type(exc).__name__)
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        log_line("connection error: %s" % (sys.exc_info()[0].__name__,))


def write_ready(path, line):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w", encoding="ascii") as f:
        f.write(line + "\n")
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Mock FranceConnect v2 / FranceConnect+.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--public-host", default=None,
                        help="host name used in the issuer (default: --host)")
    parser.add_argument("--pki-dir", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--identities", default=DEFAULT_IDENTITIES)
    parser.add_argument("--issuer-path", default="/api/v2")
    parser.add_argument("--mode", choices=tuple(ACR_SUPPORTED), default="fc")
    parser.add_argument("--ready-file", default=None)
    parser.add_argument("--autologin", default=None)
    parser.add_argument("--jwks-cafile", default=None,
                        help="CA file for clients' https jwks_uri")
    args = parser.parse_args(argv)

    issuer_path = "/" + args.issuer_path.strip("/") if args.issuer_path.strip("/") else ""
    try:
        clients = load_clients(args.config, args.mode, args.jwks_cafile)
        identities = load_identities(args.identities)
    except (OSError, ValueError, ConfigError) as exc:
        log_line("configuration error: %s" % exc)
        return 2
    if args.autologin is not None and args.autologin not in identities:
        log_line("configuration error: unknown autologin identity")
        return 2
    public_host = args.public_host or args.host
    hosts = list(pki.DEFAULT_HOSTS)
    for h in (args.host, public_host):
        if h not in hosts:
            hosts.append(h)
    pki.ensure_ca(args.pki_dir)
    cert, key = pki.issue_cert(args.pki_dir, "server", tuple(hosts))

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    app = MockFC("", args.mode, clients, identities, args.autologin, args.jwks_cafile)
    server = TLSServer((args.host, args.port), family, ctx, app)
    port = server.server_address[1]
    url_host = "[%s]" % public_host if ":" in public_host else public_host
    app.issuer = "https://%s:%d%s" % (url_host, port, issuer_path)
    app.prefix = issuer_path
    log_line("issuer %s, mode %s, %d clients, %d identities"
             % (app.issuer, args.mode, len(clients), len(identities)))
    line = "READY %d" % port
    print(line, flush=True)
    if args.ready_file:
        write_ready(args.ready_file, line)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
