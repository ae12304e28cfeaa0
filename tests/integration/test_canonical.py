"""One canonical request: Sésame decides on the same request it forwards.

A table of raw requests (sent over raw sockets: http.client would normalise
them) built from classes of path and Host confusion (dot segments plain and
encoded, ";" parameters, slashes, encoded unreserved characters, encoded
separators, backslashes, double encoding, control bytes, invalid escapes,
overlong UTF-8, case, query and fragment tricks, absolute-form targets, Host
and Connection tricks, spoofed identity headers), each sent anonymously, with
another tenant's session, with a session of a provider the route does not
accept, and with a session the route accepts. Real processes on loopback:
redis-server, the mock FranceConnect, sesame, and nginx as the upstream of
every route (nginx_env.py), whose access log records what it acted on.

The expected behaviour comes from a small pure-Python model of the rules
(canon_path, canon_host, expect below; gateway/http/canon.h has the same
rules): 400 exactly when the model refuses; otherwise the route the canonical
path selects decides, and nginx must receive the canonical path (query as
sent) and exactly one Host, the canonical authority.
"""

import re
import urllib.parse

import pytest

from nginx_env import HOST_A, HOST_B, MARKER, ROUTES, TENANT_OF_HOST, CanonStack, exchange

# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------

UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")
PREFIX = "/sesame/"


class Refused(Exception):
    pass


def _tokens(path):
    """path bytes -> list of (octet, escaped); refuses invalid escapes."""
    out = []
    i = 0
    while i < len(path):
        b = path[i]
        if b == 0x25:
            if len(path) - i < 3:
                raise Refused("invalid percent escape")
            h1, h2 = path[i + 1], path[i + 2]
            if h1 not in HEXDIGITS or h2 not in HEXDIGITS:
                raise Refused("invalid percent escape")
            out.append((int(path[i + 1:i + 3], 16), True))
            i += 3
        else:
            out.append((b, False))
            i += 1
    return out


def canon_path(path):
    """The canonical form of an origin-form path (bytes, no query), or Refused."""
    if not path or path[0:1] != b"/":
        raise Refused("not an origin-form path")
    toks = _tokens(path)
    for k, (o, esc) in enumerate(toks):
        if not esc:
            if o == 0x5C or o <= 0x20 or o >= 0x7F or o in (0x23, 0x3F):
                raise Refused("raw byte 0x%02x" % o)
            continue
        if o in (0x2F, 0x5C):
            raise Refused("encoded separator")
        if o < 0x20 or o == 0x7F:
            raise Refused("encoded control byte")
        if o == 0x25:
            nxt = toks[k + 1:k + 3]
            if len(nxt) == 2 and all(t[0] in HEXDIGITS for t in nxt):
                raise Refused("double encoding")
    # runs of escaped octets >= 0x80 must be well-formed UTF-8
    k = 0
    while k < len(toks):
        if toks[k][1] and toks[k][0] >= 0x80:
            j = k
            while j < len(toks) and toks[j][1] and toks[j][0] >= 0x80:
                j += 1
            try:
                bytes(t[0] for t in toks[k:j]).decode("utf-8", "strict")
            except UnicodeDecodeError:
                raise Refused("invalid UTF-8")
            k = j
        else:
            k += 1
    # segments, split on the raw '/'
    segs = [[]]
    for t in toks[1:]:
        if t == (0x2F, False):
            segs.append([])
        else:
            segs[-1].append(t)

    def text(seg):
        s = ""
        for o, esc in seg:
            if esc and o not in UNRESERVED:
                s += "%%%02X" % o
            else:
                s += chr(o)
        return s

    stack = []
    trailing = False
    for idx, seg in enumerate(segs):
        last = idx == len(segs) - 1
        if not seg:
            if last:
                trailing = True
            continue
        semi = [n for n, t in enumerate(seg) if t[0] == 0x3B]  # raw ';' or %3B
        if semi and text(seg[:semi[0]]) in (".", ".."):
            raise Refused("dot segment with parameters")
        s = text(seg)
        # only dots and encoded spaces, other than "." and "..": Windows and
        # IIS trim trailing dots and spaces and would read "..." as ".."
        if (s not in (".", "..") and any(t[0] == 0x2E for t in seg)
                and all(t[0] == 0x2E or t == (0x20, True) for t in seg)):
            raise Refused("dot segment with trailing dots or spaces")
        if s == ".":
            trailing = last
            continue
        if s == "..":
            if not stack:
                raise Refused("dot segment above the root")
            stack.pop()
            trailing = last
            continue
        stack.append(s)
        trailing = False
    out = "/" + "/".join(stack)
    if trailing and stack:
        out += "/"
    return out


HOST_RE = re.compile(r"^(?:([A-Za-z0-9._~-]{1,255})|(\[[0-9A-Fa-f:.]{2,45}\]))(?::([0-9]{1,5}))?$")


def canon_host(value):
    """(canonical authority, host name) of a Host value, or Refused."""
    m = HOST_RE.match(value)
    if not m or (m.group(2) and ":" not in m.group(2)):
        raise Refused("invalid Host")
    if m.group(3) is not None and int(m.group(3)) > 65535:
        raise Refused("invalid port")
    name = (m.group(1) or m.group(2)).lower()
    if m.group(1):
        if name == "." or name.endswith(".."):
            raise Refused("invalid Host")
        if name.endswith("."):
            name = name[:-1]
    port = "" if m.group(3) is None else ":" + m.group(3)
    return name + port, name


SENSITIVE_CONNECTION = ("host", "content-length", "transfer-encoding", "cookie", "forwarded")


class Expect:
    """What the model says about a request (independent of the session):
    kind is "refuse" (400), "no-tenant" (404), "internal" (Sésame's own
    /sesame/ endpoint) or "route" (then tenant, route, path, query,
    authority describe the canonical request)."""

    def __init__(self, kind, why="", tenant=None, route=None, path=None, query=None,
                 authority=None):
        self.kind, self.why, self.tenant, self.route = kind, why, tenant, route
        self.path, self.query, self.authority = path, query, authority

    @property
    def forwarded_target(self):
        return self.path + ("?" + self.query if self.query is not None else "")

    def __repr__(self):
        if self.kind == "route":
            return "route %s%s %s %r via %r" % (self.tenant, self.route[1], self.route[2],
                                                self.forwarded_target, self.authority)
        return "%s %s %s" % (self.kind, self.why, self.path or "")


def find_route(tenant, path):
    best = None
    for r in ROUTES:
        if r[0] != tenant:
            continue
        p = r[1]
        if p == "/" or path == p or path.startswith(p + "/"):
            if best is None or len(p) > len(best[1]):
                best = r
    return best


def expect(case):
    """The model's verdict on a Case."""
    try:
        return _expect(case)
    except Refused as e:
        return Expect("refuse", str(e))


def _expect(case):
    target = case.target.encode("latin-1")
    if any(b <= 0x20 or b >= 0x7F or b == 0x23 for b in target):
        raise Refused("byte not allowed in the request-target")
    hosts = [v for n, v in case.headers if n.lower() == "host"]
    if len(hosts) > 1:
        raise Refused("two Host headers")
    if case.version == "HTTP/1.1" and not hosts:
        raise Refused("no Host")
    tokens = []
    for n, v in case.headers:
        if n.lower() == "connection":
            # '_' read as '-', as for the headers Sésame strips
            tokens += [t.strip().lower().replace("_", "-") for t in v.split(",") if t.strip()]
    for t in tokens:
        if (t in SENSITIVE_CONNECTION or t.startswith("x-forwarded-") or
                t.startswith("x-sesame-")):
            raise Refused("Connection names %s" % t)
    host_auth = canon_host(hosts[0]) if hosts else None
    m = re.match(r"^(?i:https?)://([^/?]*)(.*)$", case.target)
    if m:
        authority = m.group(1)
        if "@" in authority:
            raise Refused("userinfo")
        auth = canon_host(authority)
        rest = m.group(2)
        if host_auth is None:
            raise Refused("no Host")
        # The authority wins: one that names no tenant is a 404 (like any
        # unknown host); one that names a tenant other than the Host
        # header's (a known one, or none) is refused.
        if (TENANT_OF_HOST.get(auth[1]) is not None and
                TENANT_OF_HOST.get(auth[1]) != TENANT_OF_HOST.get(host_auth[1])):
            raise Refused("absolute-form authority of another tenant")
        host_auth = auth
        if rest == "" or rest.startswith("?"):
            rest = "/" + rest
    elif case.target.startswith("/"):
        rest = case.target
    else:
        raise Refused("request-target form")
    if host_auth is None:
        raise Refused("no Host")
    raw_path, q, query = rest.partition("?")
    path = canon_path(raw_path.encode("latin-1"))
    query = query if q else None
    tenant = TENANT_OF_HOST.get(host_auth[1])
    if tenant is None:
        return Expect("no-tenant", path=path)
    if path.startswith(PREFIX):
        return Expect("internal", tenant=tenant, path=path)
    route = find_route(tenant, path)
    return Expect("route", tenant=tenant, route=route, path=path, query=query,
                  authority=host_auth[0])


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------

P = "{P}"           # Sésame's port, filled in at run time
HA = HOST_A + ":" + P
HB = HOST_B + ":" + P


class Case:
    def __init__(self, cid, target, headers=None, version="HTTP/1.1", method="GET"):
        self.id = cid
        self.target = target
        self.headers = [("Host", HA)] if headers is None else headers
        self.version = version
        self.method = method

    def filled(self, port):
        c = Case(self.id, self.target.replace(P, str(port)),
                 [(n, v.replace(P, str(port))) for n, v in self.headers], self.version,
                 self.method)
        return c

    def raw(self, extra, first=()):
        """The request bytes; `first` headers go before the case's own (so
        that nginx logs them even when it refuses a later line)."""
        lines = ["%s %s %s" % (self.method, self.target, self.version)]
        lines += ["%s: %s" % hv for hv in first]
        lines += ["%s: %s" % hv for hv in self.headers]
        lines += ["%s: %s" % hv for hv in extra]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


CASES = []


def add(cid, target, headers=None, **kw):
    assert cid not in {c.id for c in CASES}, cid
    CASES.append(Case(cid, target, headers, **kw))


SECRET = "/private/secret.html"

# -- dot segments ------------------------------------------------------------
for cid, t in [
    ("dot-plain", "/static/../private/secret.html"),
    ("dot-dot-dot", "/static/./../private/secret.html"),
    ("dot-enc-lower", "/static/%2e%2e/private/secret.html"),
    ("dot-enc-mixed", "/static/%2E%2e/private/secret.html"),
    ("dot-enc-upper", "/static/%2E%2E/private/secret.html"),
    ("dot-half-enc-1", "/static/.%2e/private/secret.html"),
    ("dot-half-enc-2", "/static/%2e./private/secret.html"),
    ("dot-enc-single", "/static/%2e/../private/secret.html"),
    ("dot-two-levels", "/static/x/../../private/secret.html"),
    ("dot-many-levels", "/static/a/b/c/../../../../private/secret.html"),
    ("dot-many-levels-enc", "/static/a/b/c/%2e%2e/%2e%2e/%2e%2e/%2e%2e/private/secret.html"),
    ("dot-above-root", "/static/../../private/secret.html"),
    ("dot-above-root-2", "/../private/secret.html"),
    ("dot-above-root-3", "/static/../../../../etc/passwd"),
    ("dot-above-root-enc", "/%2e%2e/private/secret.html"),
    ("dot-trailing", "/private/secret.html/.."),
    ("dot-trailing-static", "/static/.."),
    ("dot-trailing-static-enc", "/static/%2e%2e"),
    ("dot-trailing-single", "/static/."),
    ("dot-to-private-dir", "/static/../private/"),
    ("dot-to-private-echo", "/static/../private/echo"),
    ("dot-enc-to-private-echo", "/static/%2e%2e/private/echo"),
    ("dot-to-agents", "/static/../agents/secret.html"),
    ("dot-enc-to-agents-echo", "/static/%2e%2e/agents/echo"),
    ("dot-agents-to-private", "/agents/../private/secret.html"),
    ("dot-private-to-agents", "/private/../agents/secret.html"),
    ("dot-private-to-static", "/private/../static/app.css"),
    ("dot-agents-to-static", "/agents/%2e%2e/static/app.css"),
    ("dot-into-static", "/private/%2e%2e/static/echo"),
    ("dot-semicolon", "/static/..;/private/secret.html"),
    ("dot-single-semicolon", "/static/.;/../private/secret.html"),
    ("dot-semicolon-param", "/static/..;x=1/private/secret.html"),
    ("dot-enc-semicolon", "/static/%2e%2e;/private/secret.html"),
    ("dot-semicolon-enc-lower", "/static/..%3b/private/secret.html"),
    ("dot-semicolon-enc-upper", "/static/..%3B/private/secret.html"),
    ("dot-single-semicolon-enc", "/static/.%3b/../private/secret.html"),
    ("semicolon-not-dot", "/static/foo;bar/../../private/secret.html"),
    ("semicolon-in-prefix", "/static;/../private/secret.html"),
    ("three-dots", "/static/.../private/secret.html"),
    ("four-dots", "/static/..../private/secret.html"),
    ("three-dots-enc", "/static/%2e%2e%2e/private/secret.html"),
    ("dots-space", "/static/..%20/private/secret.html"),
    ("dot-space-dot", "/static/.%20./private/secret.html"),
    ("dot-space-end", "/private/secret.html/.%20"),
    ("dots-in-name", "/static/a.../app.css"),
    ("dot-file", "/static/.app.css"),
    ("dot-sesame-signin", "/static/../sesame/signin"),
    ("dot-sesame-escape", "/sesame/../private/secret.html"),
    ("dot-enc-sesame-escape", "/sesame/%2e%2e/private/secret.html"),
]:
    add(cid, t)

# -- slashes -------------------------------------------------------------------
for cid, t in [
    ("slash-double-lead", "//private/secret.html"),
    ("slash-triple-lead", "///private/secret.html"),
    ("slash-double-dot", "/static//../private/secret.html"),
    ("slash-triple-dot", "/static///../private/secret.html"),
    ("slash-dot-slash", "/static/.//../private/secret.html"),
    ("slash-only-3", "///"),
    ("slash-only-2", "//"),
    ("slash-static-double", "/static//app.css"),
    ("slash-lead-static", "//static/app.css"),
    ("slash-private-double", "/private//secret.html"),
    ("slash-lead-sesame", "//sesame/signin"),
    ("slash-enc-then-dot", "/static/%2f../private/secret.html"),
    ("slash-trailing-many", "/static/app.css//"),
]:
    add(cid, t)

# -- encoded unreserved characters ----------------------------------------------
for cid, t in [
    ("unres-p", "/%70rivate/secret.html"),
    ("unres-all", "/%70%72%69%76%61%74%65/secret.html"),
    ("unres-static-dot", "/stat%69c/../private/secret.html"),
    ("unres-static-css", "/stat%69c/app.css"),
    ("unres-static-s", "/%73tatic/app.css"),
    ("unres-dot-ext", "/static/app%2ecss"),
    ("unres-private-ext", "/private/secret%2Ehtml"),
    ("unres-tilde", "/%7euser"),
    ("unres-upper-A", "/static/%41pp.css"),
    ("unres-static-dot-enc", "/stati%63/%2e%2e/private/secret.html"),
    ("unres-underscore", "/static/%5f"),
    ("unres-hyphen", "/static/%2d"),
    ("unres-agents", "/%61gents/secret.html"),
    ("unres-sesame", "/%73esame/signin"),
    ("reserved-kept", "/static/a%3Ab%40c"),
    ("reserved-lower-hex", "/static/a%3ab"),
    ("space-enc", "/static/%20"),
    ("question-enc", "/static%3f/../private/secret.html"),
    ("hash-enc", "/static/%23/../../private/secret.html"),
]:
    add(cid, t)

# -- encoded separators --------------------------------------------------------
for cid, t in [
    ("sep-2f", "/static%2f..%2fprivate/secret.html"),
    ("sep-2F", "/static%2F..%2Fprivate/secret.html"),
    ("sep-dot-2f", "/static/..%2fprivate/secret.html"),
    ("sep-enc-dot-2f", "/static/%2e%2e%2fprivate/secret.html"),
    ("sep-enc-dot-2F", "/static/%2e%2e%2Fprivate/secret.html"),
    ("sep-5c", "/static%5c..%5cprivate/secret.html"),
    ("sep-dot-5C", "/static/..%5Cprivate/secret.html"),
    ("sep-5c-lone", "/static/%5c/private"),
    ("sep-2f-in-file", "/private%2fsecret.html"),
    ("sep-2f-public", "/static/a%2Fb"),
]:
    add(cid, t)

# -- raw backslash ---------------------------------------------------------------
for cid, t in [
    ("bs-all", "/static\\..\\private\\secret.html"),
    ("bs-after-dot", "/static/..\\private/secret.html"),
    ("bs-before-dot", "/static\\../private/secret.html"),
    ("bs-in-file", "/private\\secret.html"),
    ("bs-public", "/static/app.css\\"),
]:
    add(cid, t)

# -- double encoding -------------------------------------------------------------
for cid, t in [
    ("dbl-dot", "/static/%252e%252e/private/secret.html"),
    ("dbl-dot-upper", "/static/%252E%252E/private/secret.html"),
    ("dbl-slash", "/static/%252f"),
    ("dbl-mixed", "/static/%25%32%65"),
    ("dbl-letter", "/static/%2541"),
    ("dbl-half", "/static/%252"),
    ("pct-alone", "/static/%25"),
    ("pct-not-hex", "/static/%25zz"),
    ("pct-pct", "/static/%25%25"),
    ("pct-suffix", "/static/100%25"),
]:
    add(cid, t)

# -- NUL and control bytes -------------------------------------------------------
for cid, t in [
    ("ctl-nul-dot", "/static/%00/../private/secret.html"),
    ("ctl-nul-ext", "/private/secret.html%00.css"),
    ("ctl-lf", "/static/%0a"),
    ("ctl-cr", "/static/%0d"),
    ("ctl-crlf-header", "/static/%0d%0aX-Sesame-Account:%20victim"),
    ("ctl-tab", "/static/%09"),
    ("ctl-1f", "/static/%1f"),
    ("ctl-del", "/static/%7f"),
    ("ctl-raw-del", "/static/\x7f"),
    ("ctl-raw-soh", "/static/\x01"),
    ("ctl-raw-high", "/static/\xe9"),
]:
    add(cid, t)

# -- invalid escapes -------------------------------------------------------------
for cid, t in [
    ("esc-lone", "/static/%"),
    ("esc-one-digit", "/static/%2"),
    ("esc-zz", "/static/%zz"),
    ("esc-g0", "/static/%g0"),
    ("esc-pct-pct", "/static/%%32%65"),
    ("esc-end", "/private/secret.html%"),
    ("esc-2x", "/static/%2x/../private/secret.html"),
]:
    add(cid, t)

# -- UTF-8 ------------------------------------------------------------------------
for cid, t in [
    ("utf8-overlong-dots", "/static/%c0%ae%c0%ae/private/secret.html"),
    ("utf8-overlong-3", "/static/%e0%80%ae%e0%80%ae/private/secret.html"),
    ("utf8-overlong-slash", "/static/%c0%af../private/secret.html"),
    ("utf8-lead-alone", "/static/%c0%2e"),
    ("utf8-overlong-4", "/static/%f0%80%80%ae"),
    ("utf8-surrogate", "/static/%ed%a0%80"),
    ("utf8-above-max", "/static/%f4%90%80%80"),
    ("utf8-stray", "/static/%80"),
    ("utf8-truncated", "/static/%e2%82"),
    ("utf8-valid", "/static/%c3%a9"),
    ("utf8-valid-dot", "/static/caf%c3%a9/../../private/secret.html"),
    ("utf8-valid-euro", "/static/%e2%82%ac"),
]:
    add(cid, t)

# -- case ---------------------------------------------------------------------------
for cid, t in [
    ("case-private", "/PRIVATE/secret.html"),
    ("case-static-dot", "/Static/../private/secret.html"),
    ("case-static-upper", "/STATIC/app.css"),
    ("case-static-cap", "/Static/app.css"),
    ("case-file", "/static/APP.CSS"),
    ("case-enc-S", "/%53tatic/app.css"),
    ("case-private-cap", "/Private/secret.html"),
    ("case-sesame", "/SESAME/signin"),
]:
    add(cid, t)

# -- query and fragment ---------------------------------------------------------------
for cid, t in [
    ("q-dot-in-query", "/static?/../private/secret.html"),
    ("q-param-dot", "/static/x?a=/../private/secret.html"),
    ("q-enc-dot", "/static/?%2e%2e/private/secret.html"),
    ("q-enc-sep", "/static/app.css?x=%2e%2e%2f"),
    ("q-nul", "/static/app.css?a=%00"),
    ("q-private", "/private/secret.html?x=../../static"),
    ("q-dot-path", "/static/..?x"),
    ("q-empty", "/static/app.css?"),
    ("q-double", "/static/app.css??x"),
    ("frag-simple", "/static/app.css#x"),
    ("frag-dot", "/static#/../private/secret.html"),
    ("frag-empty", "/private/secret.html#"),
    ("frag-after-query", "/static/app.css?#frag"),
]:
    add(cid, t)

# -- request-target forms ---------------------------------------------------------------
for cid, t, hosts in [
    ("abs-other-tenant", "http://ville-b.localhost:{P}/private/secret.html", [HA]),
    ("abs-same", "http://ville-a.localhost:{P}/private/secret.html", [HA]),
    ("abs-scheme-upper", "HTTP://ville-a.localhost:{P}/static/app.css", [HA]),
    ("abs-static-echo", "http://ville-a.localhost:{P}/static/echo", [HA]),
    ("abs-dot", "http://ville-a.localhost:{P}/static/../private/secret.html", [HA]),
    ("abs-enc-dot", "http://ville-a.localhost:{P}/static/%2e%2e/private/secret.html", [HA]),
    ("abs-authority-upper", "http://VILLE-A.localhost:{P}/static/echo", [HA]),
    ("abs-authority-dot", "http://ville-a.localhost.:{P}/static/echo", [HA]),
    ("abs-b-public-from-a", "http://ville-b.localhost:{P}/static/app.css", [HA]),
    ("abs-a-from-b", "http://ville-a.localhost:{P}/static/app.css", [HB]),
    ("abs-b-from-b", "http://ville-b.localhost:{P}/private/echo", [HB]),
    ("abs-unknown-from-a", "http://ville-c.localhost:{P}/static/app.css", [HA]),
    ("abs-a-from-unknown", "http://ville-a.localhost:{P}/static/app.css", ["ville-c.localhost:{P}"]),
    ("abs-a-from-ip", "http://ville-a.localhost:{P}/private/echo", ["127.0.0.1:{P}"]),
    ("abs-b-from-a-secret-enc", "http://ville-b.localhost:{P}/static/%2e%2e/private/secret.html",
     [HA]),
    ("abs-other-port", "http://ville-a.localhost:1/static/echo", [HA]),
    ("abs-no-path", "http://ville-a.localhost:{P}", [HA]),
    ("abs-no-path-query", "http://ville-a.localhost:{P}?x=1", [HA]),
    ("abs-https", "https://ville-a.localhost:{P}/static/echo", [HA]),
    ("abs-double-slash", "http://ville-a.localhost:{P}//private/secret.html", [HA]),
    ("abs-userinfo", "http://user@ville-a.localhost:{P}/static/app.css", [HA]),
    ("abs-sep", "http://ville-a.localhost:{P}/static/..%2fprivate/secret.html", [HA]),
    ("abs-b-from-upper-a", "http://ville-b.localhost:{P}/static/echo", ["VILLE-A.LOCALHOST:{P}"]),
    ("abs-sesame-other-tenant", "http://ville-b.localhost:{P}/sesame/signin", [HA]),
    ("abs-bad-authority", "http://ville-a.localhost%2e:{P}/static/app.css", [HA]),
    ("relative-target", "static/app.css", [HA]),
]:
    add(cid, t, [("Host", h) for h in hosts])

# -- Host -------------------------------------------------------------------------------
for cid, t, hosts in [
    ("host-dup-same", "/static/app.css", [HA, HA]),
    ("host-dup-other", "/static/app.css", [HA, HB]),
    ("host-dup-other-rev", SECRET, [HB, HA]),
    ("host-upper", "/static/echo", ["VILLE-A.LOCALHOST:{P}"]),
    ("host-mixed-private", "/private/echo", ["Ville-A.Localhost:{P}"]),
    ("host-trailing-dot", "/static/echo", ["ville-a.localhost.:{P}"]),
    ("host-trailing-dot-private", "/private/echo", ["ville-a.localhost.:{P}"]),
    ("host-trailing-dot-noport", "/static/echo", ["ville-a.localhost."]),
    ("host-noport", "/static/echo", [HOST_A]),
    ("host-other-port", "/static/echo", ["ville-a.localhost:1"]),
    ("host-port-too-big", "/static/app.css", ["ville-a.localhost:99999"]),
    ("host-empty", "/static/app.css", [""]),
    ("host-two-dots", "/static/app.css", ["ville-a.localhost..:{P}"]),
    ("host-unknown", "/static/app.css", ["ville-c.localhost:{P}"]),
    ("host-pct", "/static/app.css", ["ville-a.localhost%2e:{P}"]),
    ("host-list", "/static/app.css", ["ville-a.localhost:{P}, ville-b.localhost:{P}"]),
    ("host-ip", "/static/app.css", ["127.0.0.1:{P}"]),
    ("host-b-secret", SECRET, [HB]),
    ("host-b-upper-secret", SECRET, ["VILLE-B.LOCALHOST.:{P}"]),
    ("host-b-dot-secret", "/static/%2e%2e/private/secret.html", [HB]),
]:
    add(cid, t, [("Host", h) for h in hosts])
add("host-name-case-dup", "/static/app.css", [("Host", HA), ("HOST", HB)])
add("host-http10-none", "/static/app.css", [], version="HTTP/1.0")
add("host-http10-dot", "/static/../private/secret.html", [("Host", HA)], version="HTTP/1.0")

# -- Connection ------------------------------------------------------------------------
for cid, value, path in [
    ("conn-host", "Host", "/static/app.css"),
    ("conn-close-host", "close, Host", "/static/app.css"),
    ("conn-host-lower", "host", "/private/echo"),
    ("conn-cookie", "Cookie", "/private/echo"),
    ("conn-xff", "X-Forwarded-For", "/static/echo"),
    ("conn-xfh", "x-forwarded-host", "/static/echo"),
    ("conn-xfp", "X-Forwarded-Proto", "/static/echo"),
    ("conn-forwarded", "Forwarded", "/static/echo"),
    ("conn-sesame-account", "X-Sesame-Account", "/private/echo"),
    ("conn-sesame-provider", "x-sesame-provider", "/static/echo"),
    ("conn-content-length", "Content-Length", "/static/app.css"),
    ("conn-transfer-encoding", "Transfer-Encoding", "/static/app.css"),
    ("conn-keepalive-cookie", "keep-alive, Cookie", "/private/echo"),
    ("conn-underscore-sesame", "X_Sesame_Account", "/private/echo"),
    ("conn-underscore-xff", "x_forwarded_for", "/static/echo"),
    ("conn-close", "close", "/static/echo"),
    ("conn-custom", "X-Custom", "/static/echo"),
    ("conn-keepalive", "keep-alive", "/private/echo"),
]:
    add(cid, path, [("Host", HA), ("Connection", value)])
add("conn-second-field", "/static/echo",
    [("Host", HA), ("Connection", "keep-alive"), ("Connection", "Host")])

# -- spoofed identity headers ------------------------------------------------------------
for cid, name, value, path in [
    ("spoof-account-private", "X-Sesame-Account", "victim", "/private/echo"),
    ("spoof-underscore-private", "X-Sesame_Account", "victim", "/private/echo"),
    ("spoof-provider-private", "x-sesame-provider", "agents", "/private/echo"),
    ("spoof-account-public", "X-Sesame-Account", "victim", "/static/echo"),
    ("spoof-upper-public", "X-SESAME-ACCOUNT", "victim", "/static/echo"),
    ("spoof-all-underscore-public", "X_Sesame_Account", "victim", "/static/echo"),
    ("spoof-provider-public", "x-sesame-provider", "agents", "/static/echo"),
    ("spoof-account-agents", "X-Sesame-Account", "victim", "/agents/echo"),
    ("spoof-account-dot", "X-Sesame-Account", "victim", "/static/../private/echo"),
]:
    add(cid, path, [("Host", HA), (name, value)])

# -- controls: plain requests whose outcome is obvious ------------------------------------
for cid, t in [
    ("plain-secret", SECRET),
    ("plain-private-dir", "/private/"),
    ("plain-static", "/static/app.css"),
    ("plain-static-echo", "/static/echo"),
    ("plain-echo", "/echo/x"),
    ("plain-whoami", "/whoami"),
    ("plain-agents", "/agents/secret.html"),
    ("plain-root", "/"),
    ("plain-signin", "/sesame/signin"),
    ("plain-sesame-no-slash", "/sesame"),
    ("plain-staticx", "/staticx/../static/app.css"),
]:
    add(cid, t)

VARIANTS = ["anon", "other-tenant", "other-provider", "accepted"]


def session_for(variant, exp, sessions):
    """The session a variant sends (None: anonymous)."""
    if variant == "anon":
        return None
    if variant == "other-tenant":
        return sessions["b"]
    route = exp.route if exp.kind == "route" else None
    tenant = exp.tenant or "ville-a"
    if variant == "other-provider":
        # a session of the same tenant from a provider the route does not accept
        if tenant == "ville-b":
            return sessions["agents"]
        if route is not None and "agents" in route[3]:
            return sessions["a"]
        return sessions["agents"]
    # accepted: the session this route accepts
    if tenant == "ville-b":
        return sessions["b"]
    if route is not None and "agents" in route[3]:
        return sessions["agents"]
    return sessions["a"]


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = CanonStack(str(tmp_path_factory.mktemp("canonical")))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def sessions(stack):
    return stack.sessions


SEQ = [0]


def send(stack, case, cid, session=None, extra=()):
    SEQ[0] += 1
    tag = "%s.%d" % (cid, SEQ[0])
    headers = [("User-Agent", "sesame-test-canonical")]
    if session is not None:
        headers.append(("Cookie", session.cookie))
    r = exchange(stack.port, case.raw(headers + list(extra), first=[("X-Case-Id", tag)]))
    assert r is not None and r.status is not None, "%s: no HTTP response: %r" % (cid, r)
    r.tag = tag
    # nginx writes its log line right after the response: wait a little for
    # it when the response came from nginx (none when nginx refused the
    # request line itself, before reading any header)
    r.seen = stack.nginx.seen(tag, wait=0.3 if r.from_nginx else 0.0)
    return r


def sesame_signin_location(loc):
    return loc is not None and ("/sesame/signin" in loc or "/sesame/login" in loc)


# ---------------------------------------------------------------------------
# The table, each case and variant its own test
# ---------------------------------------------------------------------------

def test_table_size():
    assert len({c.id for c in CASES}) == len(CASES)
    distinct = {(c.method, c.target, c.version, tuple(c.headers)) for c in CASES}
    assert len(distinct) >= 150, len(distinct)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(stack, sessions, case, variant):
    c = case.filled(stack.port)
    exp = expect(c)
    sess = session_for(variant, exp, sessions)
    r = send(stack, c, "%s-%s" % (case.id, variant), sess)
    what = "%s [%s] %r -> expected %r; got %s%s: %r" % (
        case.id, variant, c.raw([])[:300], exp, r.status, " (from nginx)" if r.from_nginx else "",
        r.text[:200])

    # Never the protected content without a session valid for that tenant and
    # route, and then only when the canonical path routes to a required route.
    valid = (sess is not None and exp.kind == "route" and exp.route is not None and
             exp.route[2] == "required" and sess.tenant == exp.tenant and
             sess.provider in exp.route[3])
    if not valid:
        assert MARKER not in r.text, "protected content leaked: " + what
    # Never an identity other than that of the valid session, never a forged one.
    for e in r.seen:
        assert e["account"] == (sess.account if valid else ""), \
            "nginx got account %r, expected %r: %s" % (e["account"], sess.account if valid else "",
                                                       what)
        if valid:
            assert e["provider"] == sess.provider, "provider %r: %s" % (e["provider"], what)
        else:
            assert e["provider"] == "", "provider %r: %s" % (e["provider"], what)
    assert "victim" not in r.text, "a forged identity came back: " + what
    m = re.search(r"account=(\S*)", r.text) if r.from_nginx else None
    if m and m.group(1):
        assert valid and m.group(1) == sess.account, "identity in the echo: " + what

    if exp.kind == "refuse":
        assert r.status == 400, "should be refused (%s): %s" % (exp.why, what)
        assert not r.from_nginx, "400 from nginx, not Sésame: " + what
        assert not r.seen, "refused but reached nginx as %r: %s" % (r.seen, what)
        return
    assert r.status != 400, "refused, the rules route it: " + what
    if exp.kind == "no-tenant":
        assert r.status == 404 and not r.from_nginx and not r.seen, what
        return
    if exp.kind == "internal":
        assert not r.from_nginx and not r.seen, "Sésame's own endpoint reached nginx: " + what
        assert r.status in (200, 302, 303, 404), what
        return

    route = exp.route
    forwarded = route[2] == "public" or valid
    if not forwarded:
        assert r.status in (302, 303, 401), "sign-in expected: " + what
        assert not r.from_nginx and not r.seen, "reached nginx without a valid session: " + what
        if r.status != 401:
            assert sesame_signin_location(r.header("location")), what
        return
    assert r.from_nginx, "not forwarded to the route: " + what
    assert r.status in (200, 301, 404), what
    assert len(r.seen) == 1, "nginx log for %s: %r: %s" % (r.tag, r.seen, what)
    e = r.seen[0]
    assert e["status"] != "400", "nginx refused what Sésame forwarded (two Host lines?): " + what
    uri = e["request_uri"]
    upath = uri.split("?", 1)[0]
    assert "//" not in upath and "/../" not in upath + "/" and "/./" not in upath + "/", \
        "nginx got a non-canonical path %r: %s" % (uri, what)
    assert not re.search(r"%(?:[46][1-9A-Fa-f]|[57][0-9Aa]|3[0-9]|2[DEde]|5[Ff]|7[Ee])", upath), \
        "nginx got an encoded unreserved character %r: %s" % (uri, what)
    assert uri == exp.forwarded_target, "nginx got %r, Sésame routed on %r: %s" % (
        uri, exp.forwarded_target, what)
    assert e["host"] == exp.authority, "nginx got Host %r, Sésame routed by %r: %s" % (
        e["host"], exp.authority, what)
    echo = re.match(r"host=(\S*) uri=(\S*) path=\S* account=\S* provider=\S*\n$", r.text)
    if echo:
        assert echo.group(1) == exp.authority and echo.group(2) == exp.forwarded_target, \
            "the echo location saw %r: %s" % (echo.group(0), what)
    if valid and exp.path in (SECRET, "/private/", "/agents/secret.html"):
        assert r.status == 200 and MARKER in r.text, what


# ---------------------------------------------------------------------------
# Focused tests
# ---------------------------------------------------------------------------

def hostA(stack):
    return "%s:%d" % (HOST_A, stack.port)


def test_dot_segments_from_public_prefix_need_sign_in(stack):
    r = send(stack, Case("f-dot", "/static/../private/secret.html", [("Host", hostA(stack))]),
             "f-dot")
    assert r.status == 302, (r.status, r.text[:300])
    assert not r.from_nginx and not r.seen and MARKER not in r.text
    loc = r.header("location")
    assert sesame_signin_location(loc), loc
    # the return URL is the canonical path too
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(loc).query)
    assert q.get("return_to") == ["/private/secret.html"], loc


def test_absolute_form_of_another_tenant_refused(stack, sessions):
    t = "http://%s:%d/private/secret.html" % (HOST_B, stack.port)
    for s in (None, sessions["a"], sessions["b"]):
        r = send(stack, Case("f-abs", t, [("Host", hostA(stack))]), "f-abs", s)
        assert r.status == 400 and not r.from_nginx and not r.seen, (r.status, r.text[:300])
        assert MARKER not in r.text


def test_connection_naming_host_refused(stack):
    for value in ("Host", "close, Host", "keep-alive,host"):
        r = send(stack, Case("f-conn", "/static/app.css",
                             [("Host", hostA(stack)), ("Connection", value)]), "f-conn")
        assert r.status == 400 and not r.from_nginx and not r.seen, (value, r.status)


def test_encoded_dots_with_session_reach_the_canonical_file(stack, sessions):
    r = send(stack, Case("f-enc", "/static/%2e%2e/private/secret.html", [("Host", hostA(stack))]),
             "f-enc", sessions["a"])
    assert r.status == 200 and r.from_nginx, (r.status, r.text[:300])
    assert MARKER in r.text
    assert [e["request_uri"] for e in r.seen] == ["/private/secret.html"]
    assert r.seen[0]["account"] == sessions["a"].account


def test_forwarded_request_has_one_canonical_host(stack, sessions):
    ha = hostA(stack)
    for target, host in [("/static/echo", ha),
                         ("http://%s/static/echo" % ha, ha),
                         ("/static/echo", "VILLE-A.LOCALHOST.:%d" % stack.port),
                         ("http://VILLE-A.localhost:%d/private/echo" % stack.port, ha)]:
        r = send(stack, Case("f-host", target, [("Host", host)]), "f-host", sessions["a"])
        # nginx answers 400 itself to a request with two Host lines
        assert r.status == 200 and r.from_nginx, (target, host, r.status, r.text[:300])
        assert [e["host"] for e in r.seen] == [ha], (target, host, r.seen)
        assert ("host=%s " % ha) in r.text, r.text


def test_sessions_of_a_provider_the_route_does_not_accept(stack, sessions):
    ha = hostA(stack)
    agents, a = sessions["agents"], sessions["a"]
    # each session works on its own route ...
    r = send(stack, Case("f-prov", "/agents/echo", [("Host", ha)]), "f-prov", agents)
    assert r.status == 200 and r.from_nginx, (r.status, r.text[:300])
    assert r.seen[0]["provider"] == "agents", r.seen
    r = send(stack, Case("f-prov", "/private/echo", [("Host", ha)]), "f-prov", a)
    assert r.status == 200 and r.seen[0]["provider"] == "franceconnect", r.seen
    # ... and not on the other one, however the path is written
    for path, s in [("/private/secret.html", agents), ("/agents/../private/secret.html", agents),
                    ("/agents/secret.html", a), ("/static/%2e%2e/agents/secret.html", a),
                    ("/%61gents/secret.html", a)]:
        r = send(stack, Case("f-prov", path, [("Host", ha)]), "f-prov", s)
        assert r.status in (302, 303, 401), (path, s.name, r.status, r.text[:200])
        assert not r.seen and MARKER not in r.text, (path, s.name)


def test_other_tenant_session_is_anonymous(stack, sessions):
    r = send(stack, Case("f-tenant", "/private/secret.html", [("Host", hostA(stack))]), "f-tenant",
             sessions["b"])
    assert r.status == 302 and not r.seen and MARKER not in r.text, (r.status, r.text[:200])


# ---------------------------------------------------------------------------
# The model itself (pure Python, no process)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("raw,canon", [
    ("/", "/"), ("/a/b", "/a/b"), ("//a///b", "/a/b"), ("/a/", "/a/"), ("/a//", "/a/"),
    ("/a/b/..", "/a/"), ("/a/.", "/a/"), ("/.", "/"), ("/a/..", "/"),
    ("/static/../private/x", "/private/x"), ("/static/%2e%2E/p", "/p"), ("/.%2e/", None),
    ("/a/.%2e/b", "/b"), ("/%70", "/p"), ("/%c3%a9", "/%C3%A9"), ("/a%3ab", "/a%3Ab"),
    ("/%25", "/%25"), ("/%25zz", "/%25zz"), ("/%2541", None), ("/%25%32%65", None),
    ("/%252", "/%252"), ("/..", None), ("/a/../..", None), ("/%2e%2e/x", None),
    ("/..;", None), ("/a/..;x=1", None), ("/a/.;", None), ("/a/%2e%2e;", None),
    ("/a/..%3B", None), ("/a/..%3b/b", None), ("/a;b/../c", "/c"), ("/a\\b", None),
    ("/a/.../b", None), ("/%2e%2e%2e", None), ("/a/..%20", None), ("/a/.%20.", None),
    ("/a/.%20", None), ("/a/%20", "/a/%20"), ("/a/%20x", "/a/%20x"), ("/..a", "/..a"),
    ("/a..", "/a.."),
    ("/a%2fb", None), ("/a%5Cb", None), ("/a%00", None), ("/a%7F", None), ("/a%", None),
    ("/a%2", None), ("/a%zz", None), ("/%C0%AE", None), ("/%E0%80%AE", None),
    ("/%F0%80%80%AE", None), ("/%ED%A0%80", None), ("/%F4%90%80%80", None), ("/%F5", None),
    ("/%80", None), ("/%e2%82", None), ("/%e2%82%ac", "/%E2%82%AC"), ("a", None), ("", None),
    ("/a?b", None), ("/a#b", None), ("/a b", None),
])
def test_model_canon_path(raw, canon):
    if canon is None:
        with pytest.raises(Refused):
            canon_path(raw.encode("latin-1"))
    else:
        got = canon_path(raw.encode("latin-1"))
        assert got == canon
        assert canon_path(got.encode()) == got  # idempotent


@pytest.mark.parametrize("raw,canon", [
    ("ville-a.localhost", "ville-a.localhost"), ("VILLE-A.LOCALHOST:8080", "ville-a.localhost:8080"),
    ("ville-a.fr.", "ville-a.fr"), ("ville-a.fr.:443", "ville-a.fr:443"), (":080", None),
    ("a:080", "a:080"), (".", None), ("a..", None), ("", None), ("a:65536", None),
    ("[::1]:80", "[::1]:80"), ("[ABCD::1]", "[abcd::1]"), ("[1.2]", None), ("a%2e", None),
    ("a b", None), ("a,b", None),
])
def test_model_canon_host(raw, canon):
    if canon is None:
        with pytest.raises(Refused):
            canon_host(raw)
    else:
        assert canon_host(raw)[0] == canon
