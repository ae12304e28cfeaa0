"""A stack for the account tests: redis-server, the mock FranceConnect, the
echo upstream, a stand-in for a commune's citizen-relations software
(hmac_server.py over TLS) and one `sesame` serving five tenants, each with
its own `[accounts NAME]` section and FranceConnect client:

  creer     redis plugin, match = sub, policy = create; identity routes
  pivot     redis plugin, match = pivot, policy = link-only (pre-registered)
  refus     redis plugin, policy = deny
  grc       http plugin against hmac_server.py
  grcpanne  http plugin against a port where nothing listens

Every tenant is served on <name>.localhost. Plugins are loaded from
SESAME_PLUGIN_DIR (default: <builddir>/.libs); `sesame-accounts` comes from
the build tree too.
"""

import base64
import json
import os
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "mockfc"))

import harness  # noqa: E402
import pki  # noqa: E402
from sesame_env import BUILDDIR, PYTHON, Echo, Redis, Sesame, free_port  # noqa: E402
from signin_env import Browser, echoed, sign_in  # noqa: E402

os.environ.setdefault("SESAME_PLUGIN_DIR", os.path.join(BUILDDIR, ".libs"))
PLUGIN_DIR = os.environ["SESAME_PLUGIN_DIR"]
TOOL = os.path.join(BUILDDIR, "sesame-accounts")
BADABI = os.path.join(BUILDDIR, "tests", "unit", "account", ".libs", "plugin_badabi.so")

TENANTS = ["creer", "pivot", "refus", "grc", "grcpanne"]
SCOPES = ("openid given_name family_name birthdate gender birthplace birthcountry email "
          "preferred_username")
ACCOUNT_PREFIX = "comptes:"
SESSION_PREFIX = "sesame:"


def client_id(tenant):
    return "%s-client" % tenant


def provider(tenant):
    """Name of the tenant's [provider] section (what the plugins see)."""
    return "fc-%s" % tenant


def sub_of(tenant, login):
    """The sub the mock gives `login` for the tenant's client."""
    return harness.expected_sub(client_id(tenant), login)


def identity(login):
    return [i for i in harness.load_identities() if i["login"] == login][0]


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def write_secret(path, value):
    with open(path, "w") as f:
        f.write(value + "\n")
    os.chmod(path, 0o600)
    return path


def make_assertion_key(path):
    """An EC P-256 private key (PEM, PKCS#8) for assertion_key_file; returns
    the cryptography key object."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(path, 0o600)
    return key


class HmacServer:
    """tests/integration/hmac_server.py over TLS (certificate from the mock's
    CA for 127.0.0.1); entries() is its request log."""

    def __init__(self, tmp, cert, key, secret_file, mode="ok"):
        self.log = os.path.join(tmp, "hmac-%s.log" % mode)
        self.stderr = open(os.path.join(tmp, "hmac-%s.stderr" % mode), "wb")
        self.proc = subprocess.Popen(
            [PYTHON, os.path.join(HERE, "hmac_server.py"), "--port", "0", "--secret-file",
             secret_file, "--cert", cert, "--key", key, "--mode", mode, "--log", self.log],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True, start_new_session=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError("hmac_server did not start: %r" % line)
        self.port = int(line.split()[1])
        self.url = "https://127.0.0.1:%d/sesame/resolve" % self.port

    def entries(self):
        if not os.path.exists(self.log):
            return []
        with open(self.log, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.stderr.close()


def refused_port():
    """A loopback port bound but never listening (connections are refused
    while the socket stays open, and nobody else can take the port)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


def route(name, tenant, path, upstream, **keys):
    lines = ["[route %s]" % name, "tenant = %s" % tenant, "path = %s" % path,
             "upstream = %s" % upstream]
    lines += ["%s = %s" % (k, v) for k, v in keys.items()]
    return "\n".join(lines) + "\n"


class AccountsStack:
    def __init__(self, tmp):
        self.tmp = tmp
        self.port = free_port()
        self.redis = self.mock = self.echo = self.grc = self.gw = self.down_sock = None
        try:
            self.redis = Redis(tmp)
            self.mock = harness.start_mockfc(os.path.join(tmp, "mockfc"), self.clients())
            self.echo = Echo(tmp)
            cert, key = pki.issue_cert(self.mock.pki_dir, "grc", ["127.0.0.1"])
            self.hmac_secret = write_secret(os.path.join(tmp, "grc.secret"),
                                            harness.random_token(32))
            self.grc = HmacServer(tmp, cert, key, self.hmac_secret)
            self.down_sock, self.down_port = refused_port()
            self.assertion_key_file = os.path.join(tmp, "assertion.pem")
            self.assertion_key = make_assertion_key(self.assertion_key_file)
            self.gw = Sesame(tmp, self.conf_text(), port=self.port)
        except BaseException:
            self.stop()
            raise

    def clients(self):
        out = []
        for t in TENANTS:
            out.append({
                "client_id": client_id(t),
                "client_secret": "secret-%s-0123456789abcdef" % t,
                "id_token_signed_response_alg": "ES256",
                "redirect_uris": ["http://%s.localhost:%d/sesame/callback" % (t, self.port)],
                "post_logout_redirect_uris": ["http://%s.localhost:%d/sesame/logout/callback"
                                              % (t, self.port)],
            })
        return out

    def conf_text(self):
        tmp, echo = self.tmp, self.echo.url
        redis = "127.0.0.1:%d" % self.redis.port
        key = write_secret(os.path.join(tmp, "session.key"),
                           "c2Vzc2lvbi1rZXktZm9yLXRlc3RzLW9ubHktMDEyMzQ1Njc4OQ==")
        parts = ["""[server]
listen = 127.0.0.1:{port}
workers = 2
upstream_read_timeout = 3s
error_log = {tmp}/sesame-error.log
access_log = {tmp}/sesame-access.log
log_level = debug
assertion_key_file = {akey}
plugin_timeout = 5s

[redis]
address = {redis}
prefix = {sp}
command_timeout = 500ms
connect_timeout = 500ms

[session]
secret_file = {key}
""".format(port=self.port, tmp=tmp, akey=self.assertion_key_file, redis=redis, key=key,
           sp=SESSION_PREFIX)]
        for c, t in zip(self.clients(), TENANTS):
            secret = write_secret(os.path.join(tmp, "fc-%s.secret" % t), c["client_secret"])
            parts.append("""[provider {name}]
issuer = {issuer}
client_id = {cid}
client_secret_file = {secret}
ca_file = {ca}
scopes = {scopes}
http_timeout = 2s
""".format(name=provider(t), issuer=self.mock.issuer, cid=c["client_id"], secret=secret,
           ca=self.mock.ca_file, scopes=SCOPES))
        accounts_key = write_secret(os.path.join(tmp, "accounts.key"),
                                    "YWNjb3VudHMta2V5LWZvci10ZXN0cy1vbmx5LTAxMjM0NTY3")
        redis_opts = "address = %s\nprefix = %s\nsession_prefix = %s\nkey_file = %s\n" % (
            redis, ACCOUNT_PREFIX, SESSION_PREFIX, accounts_key)
        parts.append("[accounts cree]\nplugin = redis\n" + redis_opts +
                     "match = sub\npolicy = create\n")
        parts.append("[accounts preinscrits]\nplugin = redis\n" + redis_opts +
                     "match = pivot\npolicy = link-only\n")
        parts.append("[accounts refus]\nplugin = redis\n" + redis_opts +
                     "match = pivot\npolicy = deny\n")
        parts.append("""[accounts grc]
plugin = http
url = {url}
secret_file = {secret}
ca_file = {ca}
timeout = 2s
""".format(url=self.grc.url, secret=self.hmac_secret, ca=self.mock.ca_file))
        parts.append("""[accounts grc-panne]
plugin = http
url = https://127.0.0.1:{port}/sesame/resolve
secret_file = {secret}
ca_file = {ca}
timeout = 1s
""".format(port=self.down_port, secret=self.hmac_secret, ca=self.mock.ca_file))
        sections = {"creer": "cree", "pivot": "preinscrits", "refus": "refus", "grc": "grc",
                    "grcpanne": "grc-panne"}
        for t in TENANTS:
            parts.append("""[tenant {t}]
display_name = Ville de {T}
public_url = http://{t}.localhost:{port}
provider = {p}
accounts = {a}
""".format(t=t, T=t.capitalize(), port=self.port, p=provider(t), a=sections[t]))
        # creer: identity passed to upstreams
        parts.append(route("creer-accueil", "creer", "/", echo, access="public"))
        parts.append(route("creer-demarches", "creer", "/demarches", echo,
                           claims="given_name family_name birthdate"))
        parts.append(route("creer-rien", "creer", "/rien", echo))
        parts.append(route("creer-brut", "creer", "/brut", echo, claims="family_name given_name",
                           header_encoding="raw"))
        parts.append(route("creer-b64", "creer", "/b64", echo, claims="family_name",
                           header_encoding="base64url"))
        parts.append(route("creer-assertion", "creer", "/assertion", echo,
                           claims="given_name family_name birthdate", assertion="on"))
        # pivot: pre-registered citizens, an attribute condition
        parts.append(route("pivot-demarches", "pivot", "/demarches", echo, claims="family_name"))
        parts.append(route("pivot-mediatheque", "pivot", "/mediatheque", echo,
                           require="attribute.abonne = oui",
                           deny_message="La médiathèque est réservée à ses abonnés."))
        parts.append(route("refus-demarches", "refus", "/demarches", echo))
        parts.append(route("grc-demarches", "grc", "/demarches", echo, claims="family_name"))
        parts.append(route("grc-centre", "grc", "/centre", echo,
                           require="attribute.quartier = Centre"))
        parts.append(route("grc-gare", "grc", "/gare", echo, require="attribute.quartier = Gare",
                           deny_message="Service réservé au quartier de la Gare."))
        parts.append(route("grc-tenant", "grc", "/tenant", echo,
                           require="attribute.tenant_seen = grc"))
        parts.append(route("grcpanne-demarches", "grcpanne", "/demarches", echo))
        return "\n".join(parts)

    # -- helpers for the tests -------------------------------------------

    def base(self, tenant):
        return "http://%s.localhost:%d" % (tenant, self.port)

    def browser(self):
        return Browser(self.port)

    def sign_in(self, browser, tenant, login, path="/demarches"):
        """The whole sign-in; returns the callback's response."""
        r, _ = sign_in(browser, self.mock, self.port, login, path=path,
                       host="%s.localhost" % tenant)
        return r

    def get(self, browser, tenant, path, **kw):
        return browser.get(self.base(tenant) + path, **kw)

    def echoed_headers(self, browser, tenant, path):
        r = self.get(browser, tenant, path)
        assert r.status == 200, (tenant, path, r.status, r.body[:500])
        return echoed(r.body)["h"]

    def session_cookie(self, browser, tenant):
        return browser.cookies.get("%s.localhost" % tenant, {}).get("sesame")

    def upstream_requests(self):
        return self.echo.stats()["requests_total"]

    def tool(self, section, tenant, *args):
        """Runs sesame-accounts with the gateway's configuration; returns
        (exit code, stdout, stderr)."""
        p = subprocess.run([TOOL, "-c", self.gw.conf_path, "-a", section, "-t", tenant]
                           + list(args), capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout, p.stderr

    def write_csv(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def stop(self):
        for p in (self.gw, self.grc, self.echo, self.mock, self.redis):
            if p is None:
                continue
            try:
                p.stop()
            except Exception:  # noqa: BLE001
                pass
        if self.down_sock is not None:
            self.down_sock.close()
