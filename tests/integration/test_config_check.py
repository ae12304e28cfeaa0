"""`sesame -t` reports every kind of configuration error as FILE:LINE: key: message."""

import os
import re

import pytest

from sesame_env import check_config

GOOD = """[server]
listen = 127.0.0.1:8080

[tenant ville-a]
public_url = http://ville-a.localhost:8080

[route accueil]
tenant = ville-a
upstream = http://127.0.0.1:9000
access = public
"""


def write(tmp_path, text, name="sesame.conf"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_good_config_passes(tmp_path):
    path = write(tmp_path, GOOD)
    rc, out = check_config(path)
    assert rc == 0, out
    assert "configuration OK" in out


def errors_of(out):
    return [l for l in out.splitlines() if l.strip()]


# (name, configuration text, expected line number, key, words of the message)
CASES = [
    ("unknown key", GOOD + "colour = red\n", 11, "colour", "unknown key"),
    ("bad duration", GOOD.replace("[server]\n", "[server]\nheader_timeout = 10 minutes\n"), 2,
     "header_timeout", "not a duration"),
    ("bad size", GOOD.replace("[server]\n", "[server]\nmax_body_size = 12x\n"), 2,
     "max_body_size", "not a size"),
    ("bad bool", GOOD.replace("[server]\n", "[server]\nvia = peut-etre\n"), 2, "via", "on or off"),
    ("bad listen", GOOD.replace("127.0.0.1:8080", "127.0.0.1"), 2, "listen", "port"),
    ("unknown section", GOOD + "[serveur]\n", 11, "serveur", "unknown section"),
    ("unnamed tenant", GOOD + "[tenant]\n", 11, "tenant", "needs a name"),
    ("duplicate route name", GOOD + "[route accueil]\ntenant = ville-a\nupstream = http://127.0.0.1:9000\n",
     11, "route", "defined twice"),
    ("duplicate route path", GOOD + "[route autre]\ntenant = ville-a\nupstream = http://127.0.0.1:9001\n"
     "access = public\n", 11, "path", "duplicates"),
    ("route to unknown tenant", GOOD + "[route x]\ntenant = ville-z\npath = /x\nupstream = http://127.0.0.1:9\n",
     12, "tenant", "no [tenant ville-z]"),
    ("inline secret", GOOD + "[provider fc]\nissuer = https://fc.example/api/v2\nclient_id = x\n"
     "client_secret = s3cr3t\n", 14, "client_secret", "never written"),
    ("unreadable secret file", GOOD + "[provider fc]\nissuer = https://fc.example/api/v2\nclient_id = x\n"
     "client_secret_file = /nonexistent/secret\n", 14, "client_secret_file", "cannot read"),
    ("http issuer", GOOD + "[provider fc]\nissuer = http://fc.example/api/v2\n", 12, "issuer", "https"),
    ("alg none", GOOD + "[provider fc]\nsigning_algs = ES256 none\n", 12, "signing_algs", "never"),
    ("key given twice", GOOD.replace("listen = 127.0.0.1:8080\n", "listen = 127.0.0.1:8080\nworkers = 2\nworkers = 3\n"),
     4, "workers", "given twice"),
    ("missing upstream", GOOD + "[route x]\ntenant = ville-a\npath = /x\n", 11, "upstream", "needs an upstream"),
    ("route host not of tenant", GOOD + "[route x]\ntenant = ville-a\nhost = autre.fr\npath = /x\n"
     "upstream = http://127.0.0.1:9\naccess = public\n", 13, "host", "not one of the hosts"),
    ("required route without provider", GOOD + "[route x]\ntenant = ville-a\npath = /x\n"
     "upstream = http://127.0.0.1:9\n", 11, "provider", "names a provider"),
    ("setting outside section", "listen = 1\n" + GOOD, 1, "listen", "outside any section"),
    ("bad public url", GOOD.replace("http://ville-a.localhost:8080", "http://www.ville-a.fr"), 5,
     "public_url", "https"),
    ("bad condition", GOOD.replace("access = public\n", "access = public\nrequire = age > 18\n"), 11,
     "require", "not a condition"),
    ("missing server", GOOD.replace("[server]\nlisten = 127.0.0.1:8080\n", ""), 8, "server", "missing"),
    ("host shared by tenants", GOOD + "[tenant ville-b]\npublic_url = http://ville-a.localhost:8080\n", 12,
     "hosts", "already belongs"),
    ("bad colour", GOOD.replace("[tenant ville-a]\n", "[tenant ville-a]\naccent_color = blue\n"), 5,
     "accent_color", "#RRGGBB"),
    ("unknown provider", GOOD.replace("[tenant ville-a]\n", "[tenant ville-a]\nprovider = nope\n"), 5,
     "provider", "no [provider nope]"),
]


@pytest.mark.parametrize("name,text,line,key,words", CASES, ids=[c[0] for c in CASES])
def test_each_error_names_file_line_key(tmp_path, name, text, line, key, words):
    path = write(tmp_path, text)
    rc, out = check_config(path)
    assert rc != 0
    errs = errors_of(out)
    assert errs, "no error printed"
    wanted = re.compile(r"^%s:%d: %s: .*%s" % (re.escape(path), line, re.escape(key), re.escape(words)))
    assert any(wanted.search(e) for e in errs), "\n".join(errs)


def test_every_problem_is_reported_at_once(tmp_path):
    text = GOOD.replace("[server]\n", "[server]\nvia = maybe\nheader_timeout = soon\n") + "bogus = 1\n"
    path = write(tmp_path, text)
    rc, out = check_config(path)
    assert rc != 0
    errs = errors_of(out)
    keys = {e.split(": ")[1] for e in errs}
    assert {"via", "header_timeout", "bogus"} <= keys, errs


def test_missing_file(tmp_path):
    rc, out = check_config(str(tmp_path / "absent.conf"))
    assert rc != 0
    assert "absent.conf:0: file: cannot open" in out


def test_secret_file_is_read_not_logged(tmp_path):
    secret = tmp_path / "fc.secret"
    secret.write_text("tres-secret-valeur\n")
    os.chmod(secret, 0o600)
    text = GOOD + ("[provider fc]\nissuer = https://fc.example/api/v2\nclient_id = x\n"
                   "client_secret_file = %s\nsigning_algs = none\n" % secret)
    rc, out = check_config(write(tmp_path, text))
    assert rc != 0
    assert "tres-secret-valeur" not in out


# ---------------------------------------------------------------------------
# Load-time checks of what would otherwise fail only at the first sign-in.
# Each asserts the exact "FILE:LINE: key: message" line and exit code 1.

SIGNIN = """[server]
listen = 127.0.0.1:8080

[redis]

[session]
secret_file = {key}

[provider fc]
issuer = https://fc.example/api/v2
client_id = x
client_secret_file = {secret}

[tenant ville-a]
public_url = http://ville-a.localhost:8080
provider = fc

[route accueil]
tenant = ville-a
upstream = http://127.0.0.1:9000
"""


def private(tmp_path, name, text, mode=0o600):
    p = tmp_path / name
    p.write_text(text)
    os.chmod(p, mode)
    return str(p)


def ec_key(tmp_path, name="client.pem", curve=None, mode=0o600):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(curve or ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    p = tmp_path / name
    p.write_bytes(pem)
    os.chmod(p, mode)
    return str(p)


def signin_conf(tmp_path, edit=None, append=""):
    """The SIGNIN configuration with its secret files (chmod 600), edited by
    edit(text) and followed by append."""
    text = SIGNIN.format(key=private(tmp_path, "session.key", "k" * 40),
                         secret=private(tmp_path, "fc.secret", "secret-fc-0123456789"))
    if edit:
        text = edit(text)
    return text + append


def line_of(text, needle, nth=1):
    """1-based number of the nth line of text starting with needle (or
    holding it, for a path)."""
    seen = 0
    for i, line in enumerate(text.splitlines(), 1):
        if line.startswith(needle) or (needle.startswith("/") and needle in line):
            seen += 1
            if seen == nth:
                return i
    raise AssertionError("%r not in the configuration" % needle)


def expect_error(tmp_path, text, line, key, message):
    path = write(tmp_path, text)
    rc, out = check_config(path)
    wanted = "%s:%d: %s: %s" % (path, line, key, message)
    assert rc == 1, out
    assert wanted in errors_of(out), "wanted %r in:\n%s" % (wanted, out)
    return out


def expect_ok(tmp_path, text):
    rc, out = check_config(write(tmp_path, text))
    assert rc == 0, out


def add(section_header, lines):
    """An edit adding lines right after a section header."""
    return lambda t: t.replace(section_header + "\n", section_header + "\n" + lines, 1)


FC2 = "\n[provider fc2]\nissuer = https://fc2.example\nclient_id = y\nclient_secret_file = {s}\n"


def fc2(tmp_path, extra=""):
    return FC2.format(s=private(tmp_path, "fc2.secret", "secret-fc2-0123456789")) + extra


def test_signin_base_passes(tmp_path):
    expect_ok(tmp_path, signin_conf(tmp_path))


def test_providers_unknown(tmp_path):
    text = signin_conf(tmp_path, add("[tenant ville-a]", "providers = fc nope\n"))
    expect_error(tmp_path, text, line_of(text, "providers ="), "providers", "unknown provider 'nope'")


def test_providers_route_unknown(tmp_path):
    text = signin_conf(tmp_path, add("[route accueil]", "providers = fc3\n"))
    expect_error(tmp_path, text, line_of(text, "providers ="), "providers", "unknown provider 'fc3'")


def test_providers_twice(tmp_path):
    text = signin_conf(tmp_path, add("[tenant ville-a]", "providers = fc fc\n"))
    expect_error(tmp_path, text, line_of(text, "providers ="), "providers",
                 "provider 'fc' is listed twice")


def test_tenant_provider_not_in_providers(tmp_path):
    text = signin_conf(tmp_path, add("[tenant ville-a]", "providers = fc2\n"), fc2(tmp_path))
    expect_error(tmp_path, text, line_of(text, "provider = fc"), "provider",
                 "'fc' is not one of the tenant's providers (fc2)")


def test_route_provider_not_in_providers(tmp_path):
    text = signin_conf(tmp_path, add("[route accueil]", "provider = fc\nproviders = fc2\n"),
                       fc2(tmp_path))
    expect_error(tmp_path, text, line_of(text, "provider = fc", 2), "provider",
                 "'fc' is not one of the route's providers (fc2)")


def test_providers_lists_pass(tmp_path):
    # tenant: providers only (provider becomes the first); route: any provider
    text = signin_conf(tmp_path, lambda t: t.replace("provider = fc\n", "providers = fc fc2\n"),
                       fc2(tmp_path) + "\n[route autre]\ntenant = ville-a\npath = /autre\n"
                       "upstream = http://127.0.0.1:9001\nproviders = fc2\n")
    expect_ok(tmp_path, text)


def test_cookie_domain_not_parent(tmp_path):
    text = signin_conf(tmp_path, add("[tenant ville-a]",
                                     "hosts = ville-a.localhost www.ville-a.localhost\n"
                                     "cookie_domain = a.localhost\n"))
    out = expect_error(tmp_path, text, line_of(text, "cookie_domain"), "cookie_domain",
                       "'a.localhost' is not a parent of host 'ville-a.localhost'")
    assert "not a parent of host 'www.ville-a.localhost'" in out


def test_cookie_domain_tld(tmp_path):
    text = signin_conf(tmp_path, add("[tenant ville-a]", "cookie_domain = localhost\n"))
    expect_error(tmp_path, text, line_of(text, "cookie_domain"), "cookie_domain",
                 "'localhost' is a top-level domain: the session cookie would go to every site "
                 "under it (give the commune's domain, ville-arbre.fr)")


def test_cookie_domain_parent_passes(tmp_path):
    expect_ok(tmp_path, signin_conf(tmp_path, add(
        "[tenant ville-a]", "hosts = ville-a.localhost www.ville-a.localhost\n"
        "cookie_domain = ville-a.localhost\n")))


AUTHORIZE_CASES = [
    ("no equals", "authorize_params = prompt\n",
     "'prompt' is not name=value with a name of letters, digits, '_', '.' or '-' "
     "(a space in a value is written %20)"),
    ("space in value", "authorize_params = prompt=login consent\n",
     "'consent' is not name=value with a name of letters, digits, '_', '.' or '-' "
     "(a space in a value is written %20)"),
    ("bad name", "authorize_params = pr*mpt=login\n",
     "'pr*mpt=login' is not name=value with a name of letters, digits, '_', '.' or '-' "
     "(a space in a value is written %20)"),
    ("reserved scope", "authorize_params = scope=openid\n",
     "scope is a parameter Sésame sets itself: it cannot be given here"),
    ("reserved response_mode", "authorize_params = response_mode=form_post\n",
     "response_mode is a parameter Sésame sets itself: it cannot be given here"),
    ("reserved request_uri", "authorize_params = request_uri=https://x\n",
     "request_uri is a parameter Sésame sets itself: it cannot be given here"),
    ("bad escape", "authorize_params = prompt=login%2\n",
     "the value of prompt has a bad %XX escape (a % is written %25)"),
    ("nul escape", "authorize_params = login_hint=a%00b\n",
     "the value of login_hint has a bad %XX escape (a % is written %25)"),
    ("empty", "authorize_params =\n",
     "a value is required (name=value, e.g. prompt=login)"),
]


@pytest.mark.parametrize("name,lines,message", AUTHORIZE_CASES, ids=[c[0] for c in AUTHORIZE_CASES])
def test_authorize_params(tmp_path, name, lines, message):
    text = signin_conf(tmp_path, add("[provider fc]", lines))
    expect_error(tmp_path, text, line_of(text, "authorize_params"), "authorize_params", message)


def test_authorize_params_twice(tmp_path):
    text = signin_conf(tmp_path, add("[provider fc]",
                                     "authorize_params = prompt=login\nauthorize_params = prompt=consent\n"))
    expect_error(tmp_path, text, line_of(text, "authorize_params", 2), "authorize_params",
                 "prompt is given twice")


def test_authorize_params_pass(tmp_path):
    expect_ok(tmp_path, signin_conf(tmp_path, add(
        "[provider fc]", "authorize_params = prompt=login%20consent ui_locales=fr\n"
        "authorize_params = claims={\"id_token\":{\"amr\":{\"essential\":true}}}\n")))


def test_signing_algs_empty(tmp_path):
    text = signin_conf(tmp_path, add("[provider fc]", "signing_algs =\n"))
    expect_error(tmp_path, text, line_of(text, "signing_algs"), "signing_algs",
                 "at least one algorithm is required")


def test_signing_algs_unknown(tmp_path):
    text = signin_conf(tmp_path, add("[provider fc]", "signing_algs = ES256 EdDSA\n"))
    expect_error(tmp_path, text, line_of(text, "signing_algs"), "signing_algs",
                 "unknown algorithm 'EdDSA'")


def pkjwt(tmp_path, key_line, extra=""):
    """fc with private_key_jwt and no client secret."""
    def edit(t):
        t = t.replace("client_secret_file = %s\n" % (tmp_path / "fc.secret"),
                      "token_auth = private_key_jwt\n" + key_line + extra)
        return t
    return signin_conf(tmp_path, edit)


def test_hs_without_secret(tmp_path):
    text = pkjwt(tmp_path, "private_key_file = %s\n" % ec_key(tmp_path),
                 "signing_algs = ES256 HS256 HS512\n")
    expect_error(tmp_path, text, line_of(text, "signing_algs"), "signing_algs",
                 "[provider fc]: HS256 HS512 tokens are verified with the client secret, and the "
                 "provider has no client_secret_file")


def test_private_key_jwt_needs_key(tmp_path):
    text = pkjwt(tmp_path, "")
    expect_error(tmp_path, text, line_of(text, "token_auth"), "private_key_file",
                 "[provider fc] uses private_key_jwt and needs private_key_file")


def test_private_key_jwt_key_must_load(tmp_path):
    junk = private(tmp_path, "client.pem", "-----BEGIN PRIVATE KEY-----\nbm9wZQ==\n"
                   "-----END PRIVATE KEY-----\n")
    text = pkjwt(tmp_path, "private_key_file = %s\n" % junk)
    path = write(tmp_path, text)
    rc, out = check_config(path)
    assert rc == 1, out
    prefix = ("%s:%d: private_key_file: [provider fc] cannot sign the client assertion of "
              "private_key_jwt: " % (path, line_of(text, "private_key_file")))
    assert any(e.startswith(prefix) for e in errors_of(out)), out


def test_private_key_jwt_key_not_p256(tmp_path):
    from cryptography.hazmat.primitives.asymmetric import ec
    text = pkjwt(tmp_path, "private_key_file = %s\n" % ec_key(tmp_path, curve=ec.SECP384R1()))
    path = write(tmp_path, text)
    rc, out = check_config(path)
    assert rc == 1, out
    prefix = ("%s:%d: private_key_file: [provider fc] cannot sign the client assertion of "
              "private_key_jwt: " % (path, line_of(text, "private_key_file")))
    assert any(e.startswith(prefix) for e in errors_of(out)), out


def test_private_key_jwt_passes(tmp_path):
    expect_ok(tmp_path, pkjwt(tmp_path, "private_key_file = %s\n" % ec_key(tmp_path)))


def test_client_secret_basic_needs_secret(tmp_path):
    text = signin_conf(tmp_path, lambda t: t.replace(
        "client_secret_file = %s\n" % (tmp_path / "fc.secret"), "token_auth = client_secret_basic\n"))
    expect_error(tmp_path, text, line_of(text, "token_auth"), "client_secret_file",
                 "[provider fc] needs client_secret_file (token_auth = client_secret_basic)")


def test_decryption_key_must_load(tmp_path):
    junk = private(tmp_path, "enc.pem", "not a key\n")
    text = signin_conf(tmp_path, add("[provider fc]", "decryption_key_files = %s\n" % junk))
    path = write(tmp_path, text)
    rc, out = check_config(path)
    assert rc == 1, out
    prefix = "%s:%d: decryption_key_files: " % (path, line_of(text, "decryption_key_files"))
    assert any(e.startswith(prefix) for e in errors_of(out)), out


def test_userinfo_endpoint_without_discovery(tmp_path):
    text = signin_conf(tmp_path, add("[provider fc]",
                                     "discovery = off\nauthorization_endpoint = https://fc.example/a\n"
                                     "token_endpoint = https://fc.example/t\n"
                                     "jwks_uri = https://fc.example/k\n"))
    expect_error(tmp_path, text, line_of(text, "discovery = off"), "userinfo_endpoint",
                 "[provider fc] has discovery off: give userinfo_endpoint (or userinfo = off)")
    expect_ok(tmp_path, text.replace("discovery = off\n", "discovery = off\nuserinfo = off\n"))


def accounts_key_file():
    """A key_file for the redis plugin (it refuses to start without one)."""
    import atexit
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix="sesame-conf-check-")
    atexit.register(shutil.rmtree, d, True)
    path = os.path.join(d, "accounts.key")
    with open(path, "w") as f:
        f.write("YWNjb3VudHMta2V5LWZvci10ZXN0cy1vbmx5LTAxMjM0NTY3\n")
    os.chmod(path, 0o600)
    return path


PIVOT = """
[accounts citoyens]
plugin = redis
address = 127.0.0.1:1
key_file = %s
match = pivot
""" % accounts_key_file()


def test_pivot_needs_scopes(tmp_path):
    text = signin_conf(tmp_path, add("[tenant ville-a]", "accounts = citoyens\n"), PIVOT)
    expect_error(tmp_path, text, line_of(text, "[provider fc]"), "scopes",
                 "[provider fc] does not ask for birthplace birthcountry, which [accounts citoyens] "
                 "(match = pivot) of [tenant ville-a] needs to link citizens by identité pivot: "
                 "add these scopes or identite_pivot")


def test_pivot_needs_scopes_of_route_providers(tmp_path):
    # a route's own provider signs citizens of the tenant in too
    text = signin_conf(tmp_path, lambda t: add("[tenant ville-a]", "accounts = citoyens\n")(
        add("[provider fc]", "scopes = openid identite_pivot\n")(t)),
        fc2(tmp_path, "scopes = openid profile\n") + PIVOT +
        "\n[route autre]\ntenant = ville-a\npath = /autre\nupstream = http://127.0.0.1:9001\n"
        "providers = fc fc2\n")
    expect_error(tmp_path, text, line_of(text, "scopes = openid profile"), "scopes",
                 "[provider fc2] does not ask for birthplace birthcountry, which [accounts citoyens] "
                 "(match = pivot) of [tenant ville-a] needs to link citizens by identité pivot: "
                 "add these scopes or identite_pivot")


@pytest.mark.parametrize("scopes", ["openid identite_pivot", "openid profile birth",
                                    "openid given_name family_name birthdate birthplace birthcountry"])
def test_pivot_scopes_pass(tmp_path, scopes):
    text = signin_conf(tmp_path, lambda t: add("[tenant ville-a]", "accounts = citoyens\n")(
        add("[provider fc]", "scopes = %s\n" % scopes)(t)), PIVOT)
    expect_ok(tmp_path, text)


def test_match_sub_needs_no_pivot(tmp_path):
    text = signin_conf(tmp_path, add("[tenant ville-a]", "accounts = citoyens\n"),
                       PIVOT.replace("match = pivot", "match = sub"))
    expect_ok(tmp_path, text)


def test_route_claim_not_asked(tmp_path):
    text = signin_conf(tmp_path, add("[route accueil]", "claims = given_name email\n"))
    expect_error(tmp_path, text, line_of(text, "claims ="), "claims",
                 "[route accueil] releases the claim email, which the scopes of fc never ask for")


def test_route_claim_asked_by_one_provider(tmp_path):
    text = signin_conf(tmp_path, add("[route accueil]", "providers = fc fc2\n"
                                     "claims = given_name email sub acr\n"),
                       fc2(tmp_path, "scopes = openid email\n"))
    expect_ok(tmp_path, text)


def test_route_condition_claim_not_asked(tmp_path):
    text = signin_conf(tmp_path, lambda t: add("[route accueil]", "require = age >= 18\n")(
        add("[provider fc]", "scopes = openid given_name family_name\n")(t)))
    expect_error(tmp_path, text, line_of(text, "require ="), "require",
                 "[route accueil]: 'age >= 18' needs the claim birthdate, which the scopes of fc "
                 "never ask for")


SECRET_KEYS = ["client_secret_file", "secret_file", "previous_secret_file", "password_file",
               "private_key_file", "decryption_key_files", "assertion_key_file",
               "tls_certificate_key", "accounts secret_file"]


def with_secret_key(tmp_path, key, path):
    """The SIGNIN configuration with `key` naming path; returns the text."""
    pem = key in ("private_key_file", "decryption_key_files", "assertion_key_file",
                  "tls_certificate_key")
    if pem:
        with open(path, "wb") as f:
            f.write(open(ec_key(tmp_path, "model.pem"), "rb").read())
    else:
        with open(path, "w") as f:
            f.write("s" * 40 + "\n")
    if key == "client_secret_file":
        return signin_conf(tmp_path, lambda t: t.replace(str(tmp_path / "fc.secret"), path))
    if key == "secret_file":
        return signin_conf(tmp_path, lambda t: t.replace(str(tmp_path / "session.key"), path))
    if key == "previous_secret_file":
        return signin_conf(tmp_path, add("[session]", "previous_secret_file = %s\n" % path))
    if key == "password_file":
        return signin_conf(tmp_path, add("[redis]", "password_file = %s\n" % path))
    if key == "private_key_file":
        return pkjwt(tmp_path, "private_key_file = %s\n" % path)
    if key == "decryption_key_files":
        return signin_conf(tmp_path, add("[provider fc]", "decryption_key_files = %s\n" % path))
    if key == "assertion_key_file":
        return signin_conf(tmp_path, add("[server]", "assertion_key_file = %s\n" % path))
    if key == "tls_certificate_key":
        return signin_conf(tmp_path, add("[server]", "tls_certificate_key = %s\n" % path))
    return signin_conf(tmp_path, add("[tenant ville-a]", "accounts = grc\n"),
                       "\n[accounts grc]\nplugin = http\nurl = https://127.0.0.1:1/x\n"
                       "secret_file = %s\n" % path)


@pytest.mark.parametrize("key", SECRET_KEYS)
@pytest.mark.parametrize("mode,what", [(0o644, "readable"), (0o602, "writable")])
def test_secret_file_readable_by_others(tmp_path, key, mode, what):
    path = str(tmp_path / "secret")
    text = with_secret_key(tmp_path, key, path)
    os.chmod(path, mode)
    name = key.split()[-1]
    expect_error(tmp_path, text, line_of(text, path), name,
                 "%s is %s by other users (chmod 600 it)" % (path, what))


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_file_group_readable_passes(tmp_path, key):
    path = str(tmp_path / "secret")
    text = with_secret_key(tmp_path, key, path)
    os.chmod(path, 0o640)
    expect_ok(tmp_path, text)


ZERO_REFUSED = [("[server]", "header_timeout"), ("[server]", "body_timeout"),
                ("[server]", "idle_timeout"), ("[server]", "upstream_connect_timeout"),
                ("[server]", "upstream_read_timeout"), ("[server]", "upstream_idle_timeout"),
                ("[server]", "plugin_timeout"), ("[redis]", "connect_timeout"),
                ("[redis]", "command_timeout"), ("[session]", "inactivity_timeout"),
                ("[session]", "max_lifetime"), ("[session]", "login_timeout"),
                ("[provider fc]", "discovery_refresh"), ("[provider fc]", "http_timeout")]


@pytest.mark.parametrize("section,key", ZERO_REFUSED, ids=[k for _, k in ZERO_REFUSED])
@pytest.mark.parametrize("zero", ["0", "0ms"])
def test_zero_duration_refused(tmp_path, section, key, zero):
    text = signin_conf(tmp_path, add(section, "%s = %s\n" % (key, zero)))
    expect_error(tmp_path, text, line_of(text, key + " ="), key,
                 "must be longer than 0 (examples: 500ms, 30s, 10m)")


def test_zero_durations_that_mean_something_pass(tmp_path):
    text = signin_conf(tmp_path, lambda t: add("[server]", "shutdown_timeout = 0\n")(
        add("[session]", "touch_interval = 0\ncache_ttl = 0\n")(
            add("[provider fc]", "leeway = 0\njwks_refetch_interval = 0\n")(t))))
    expect_ok(tmp_path, text)


def test_sub_second_durations_pass(tmp_path):
    text = signin_conf(tmp_path, lambda t: add("[server]", "header_timeout = 500ms\n")(
        add("[redis]", "command_timeout = 250ms\nconnect_timeout = 1ms\n")(
            add("[provider fc]", "http_timeout = 800ms\nleeway = 500ms\n")(t))))
    expect_ok(tmp_path, text)


def test_http_timeout_at_most_an_hour(tmp_path):
    text = signin_conf(tmp_path, add("[provider fc]", "http_timeout = 2h\n"))
    expect_error(tmp_path, text, line_of(text, "http_timeout"), "http_timeout",
                 "[provider fc]: at most 1h")


def test_acr_values_without_eidas_level(tmp_path):
    text = signin_conf(tmp_path, add("[provider fc]", "acr_values = eidas0 substantiel\n"))
    expect_error(tmp_path, text, line_of(text, "acr_values"), "acr_values",
                 "[provider fc]: 'eidas0 substantiel' holds no eIDAS level (eidas1, eidas2, "
                 "eidas3): every sign-in would be refused")
    expect_ok(tmp_path, text.replace("eidas0 substantiel", "eidas0 eidas2"))


def ca_pem(tmp_path):
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    p = tmp_path / "ca.pem"
    p.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(p)


def test_ca_files_must_load(tmp_path):
    junk = tmp_path / "junk-ca.pem"
    junk.write_text("not a certificate\n")
    text = signin_conf(tmp_path, lambda t: add("[provider fc]", "ca_file = %s\n" % junk)(
        t.replace("upstream = http://127.0.0.1:9000\n",
                  "upstream = https://127.0.0.1:9000\nupstream_ca_file = %s\n" % junk)))
    path = write(tmp_path, text)
    rc, out = check_config(path)
    assert rc == 1, out
    errs = errors_of(out)
    assert any(e.startswith("%s:%d: ca_file: [provider fc] %s is not a usable CA bundle ("
                            % (path, line_of(text, "ca_file"), junk)) for e in errs), out
    assert any(e.startswith("%s:%d: upstream_ca_file: [route accueil] %s is not a usable CA "
                            "bundle (" % (path, line_of(text, "upstream_ca_file"), junk))
               for e in errs), out
    expect_ok(tmp_path, text.replace(str(junk), ca_pem(tmp_path)))


@pytest.mark.parametrize("path,words", [
    ("/a/../b", "not canonical: write '/b'"),
    ("//a", "not canonical: write '/a'"),
    ("/%61", "not canonical: write '/a'"),
    ("/a/./b", "not canonical: write '/a/b'"),
    ("/a%2Fb", "encoded separator"),
    ("/..", "above the root"),
    ("/a/..;/b", "dot segment with parameters"),
])
def test_route_path_must_be_canonical(tmp_path, path, words):
    text = GOOD + "[route x]\ntenant = ville-a\npath = %s\nupstream = http://127.0.0.1:9001\n" \
        "access = public\n" % path
    rc, out = check_config(write(tmp_path, text))
    assert rc == 1, out
    line = [l for l in errors_of(out) if ": path: " in l]
    assert line, out
    assert re.match(r".*sesame\.conf:13: path: \[route x\] ", line[0]), line
    assert words in line[0], line


def test_canonical_route_paths_pass(tmp_path):
    text = GOOD + "[route x]\ntenant = ville-a\npath = /caf%C3%A9/a%20b\nupstream = http://127.0.0.1:9001\n" \
        "access = public\n"
    rc, out = check_config(write(tmp_path, text))
    assert rc == 0, out


def test_more_providers_than_the_sign_in_page_shows(tmp_path):
    extra = ""
    names = []
    for i in range(2, 7):
        names.append("p%d" % i)
        extra += "\n[provider p%d]\nissuer = https://p%d.example\nclient_id = y\nclient_secret_file = %s\n" % (
            i, i, private(tmp_path, "p%d.secret" % i, "secret-p%d-0123456789" % i))
    text = signin_conf(tmp_path, add("[tenant ville-a]", "providers = fc %s\n" % " ".join(names))) + extra
    expect_error(tmp_path, text, line_of(text, "providers ="), "providers",
                 "[tenant ville-a] its routes sign in with more than 4 providers, more than its sign-in "
                 "page can offer")
