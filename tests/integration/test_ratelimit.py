"""Sign-in rate limits with real processes: per client address (behind a
trusted proxy, per forwarded client; X-Forwarded-For from anyone else
ignored) and per tenant; the French 429 page with Retry-After; refused
sign-ins store nothing in Redis. And their configuration, checked by
`sesame -t`."""

import html
import http.client
import os

import pytest

import signin_env  # noqa: F401  (puts tests/mockfc on sys.path)
import harness  # noqa: E402
from sesame_env import Echo, Redis, Sesame, check_config, free_port
from signin_env import clients_for

TOO_MANY = "Trop de tentatives de connexion"


def conf_text(tmp, port, redis_port, mock, echo_url):
    key = os.path.join(tmp, "session.key")
    with open(key, "w") as f:
        f.write("c2Vzc2lvbi1rZXktZm9yLXRlc3RzLW9ubHktMDEyMzQ1Njc4OQ==\n")
    os.chmod(key, 0o600)
    secrets = []
    for i, c in enumerate(signin_env.CLIENTS):
        p = os.path.join(tmp, "%d.secret" % i)
        with open(p, "w") as f:
            f.write(c["client_secret"] + "\n")
        os.chmod(p, 0o600)
        secrets.append(p)
    return """
[server]
listen = 127.0.0.1:{port}
workers = 2
error_log = {tmp}/sesame-error.log
access_log = {tmp}/sesame-access.log
trusted_proxies = 127.0.0.1
client_signin_rate = 3/m

[redis]
address = 127.0.0.1:{redis_port}

[session]
secret_file = {key}

[provider franceconnect]
issuer = {issuer}
client_id = ville-a-client
client_secret_file = {sa}
ca_file = {ca}

[provider franceconnect-b]
issuer = {issuer}
client_id = ville-b-client
client_secret_file = {sb}
ca_file = {ca}

[tenant ville-a]
hosts = ville-a.localhost
public_url = http://ville-a.localhost:{port}
provider = franceconnect

[tenant ville-b]
hosts = ville-b.localhost
public_url = http://ville-b.localhost:{port}
provider = franceconnect-b
signin_rate = 2/m

[route a]
tenant = ville-a
upstream = {echo}

[route b]
tenant = ville-b
upstream = {echo}
""".format(port=port, tmp=tmp, redis_port=redis_port, key=key, issuer=mock.issuer,
           sa=secrets[0], sb=secrets[1], ca=mock.ca_file, echo=echo_url)


class Env:
    def __init__(self, tmp):
        self.port = free_port()
        self.redis = Redis(tmp)
        self.mock = harness.start_mockfc(os.path.join(tmp, "mock"), clients_for(self.port))
        self.echo = Echo(tmp)
        self.gw = Sesame(tmp, conf_text(tmp, self.port, self.redis.port, self.mock,
                                        self.echo.url), port=self.port)

    def login(self, host="ville-a.localhost", source="127.0.0.1", xff=None):
        """GET /sesame/login from `source` (a loopback address), with an
        X-Forwarded-For header when given (a list: one header each)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10,
                                       source_address=(source, 0))
        c.putrequest("GET", "/sesame/login?return_to=%2Fdemarches", skip_host=True,
                     skip_accept_encoding=True)
        c.putheader("Host", "%s:%d" % (host, self.port))
        c.putheader("Accept", "text/html")
        c.putheader("Sec-Fetch-Mode", "navigate")
        for v in xff or []:
            c.putheader("X-Forwarded-For", v)
        c.endheaders()
        r = c.getresponse()
        r.body = r.read()
        c.close()
        return r

    def pending(self):
        return int(self.redis.cli("DBSIZE").strip())

    def stop(self):
        for p in (self.gw, self.echo, self.mock, self.redis):
            try:
                p.stop()
            except Exception:  # noqa: BLE001
                pass


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = Env(str(tmp_path_factory.mktemp("ratelimit")))
    yield e
    e.stop()


def assert_429(r):
    assert r.status == 429, (r.status, r.body[:300])
    retry = r.getheader("Retry-After")
    assert retry is not None and retry.isdigit() and 1 <= int(retry) <= 60, retry
    assert r.getheader("Location") is None
    text = html.unescape(r.body.decode())
    assert 'lang="fr"' in text
    assert TOO_MANY in text
    # "Réessayer" starts the same sign-in again
    assert 'href="/sesame/login?return_to=%2Fdemarches&provider=' in text
    return text


def test_per_forwarded_client_behind_trusted_proxy(env):
    for _ in range(3):
        assert env.login(xff=["198.51.100.1"]).status == 302
    before = env.pending()
    r = env.login(xff=["198.51.100.1"])
    text = assert_429(r)
    assert "depuis votre accès à internet" in text
    # nothing stored, no binding cookie set
    assert env.pending() == before
    assert r.getheader("Set-Cookie") is None
    # other clients behind the same proxy are not affected
    assert env.login(xff=["198.51.100.2"]).status == 302
    # the client is the right-most address that is not a trusted proxy:
    # what it wrote itself on the left does not help it
    assert_429(env.login(xff=["203.0.113.99, 198.51.100.1"]))
    assert_429(env.login(xff=["203.0.113.98", "198.51.100.1, 127.0.0.1"]))
    assert "client 198.51.100.1 over client_signin_rate 3/m" in env.gw.errors()


def test_untrusted_forwarded_for_is_ignored(env):
    # 127.0.0.2 is not a trusted proxy: its X-Forwarded-For is ignored and
    # every request counts for 127.0.0.2 itself
    for i in range(3):
        assert env.login(source="127.0.0.2", xff=["192.0.2.%d" % (10 + i)]).status == 302
    assert_429(env.login(source="127.0.0.2", xff=["192.0.2.50"]))
    assert_429(env.login(source="127.0.0.2"))
    # others are not affected
    assert env.login(source="127.0.0.3").status == 302


def test_per_tenant_limit(env):
    # ville-b: 2 per minute for all clients together
    assert env.login(host="ville-b.localhost", xff=["198.51.100.21"]).status == 302
    assert env.login(host="ville-b.localhost", xff=["198.51.100.22"]).status == 302
    before = env.pending()
    r = env.login(host="ville-b.localhost", xff=["198.51.100.23"])
    text = assert_429(r)
    assert "Beaucoup de personnes essaient de se connecter" in text
    assert env.pending() == before
    # the other tenant is not affected, and the refused client kept its own
    # tokens (the tenant refusal gave them back)
    for _ in range(3):
        assert env.login(host="ville-a.localhost", xff=["198.51.100.23"]).status == 302
    assert "tenant ville-b over signin_rate 2/m" in env.gw.errors()


def test_pending_sign_ins_are_bounded(env):
    """A script without cookies gets a pending sign-in stored per request
    until its limit, then none: what it can put in Redis is bounded."""
    before = env.pending()
    codes = [env.login(xff=["198.51.100.77"]).status for _ in range(50)]
    assert codes.count(302) == 3 and codes.count(429) == 47
    assert env.pending() - before == 3


GOOD = """[server]
listen = 127.0.0.1:8080
{server}

[tenant ville-a]
public_url = http://ville-a.localhost:8080
{tenant}

[route accueil]
tenant = ville-a
upstream = http://127.0.0.1:9000
access = public
"""


@pytest.mark.parametrize("server,tenant", [
    ("client_signin_rate = 20/m\nclient_signin_table = 1000", "signin_rate = 600/10m"),
    ("client_signin_rate = off", "signin_rate = off"),
    ("client_signin_rate = 5/s", "signin_rate = 100/h"),
    ("client_signin_rate = 1/d", "signin_rate = 1000000/1d"),
])
def test_config_accepts_rates(tmp_path, server, tenant):
    p = tmp_path / "sesame.conf"
    p.write_text(GOOD.format(server=server, tenant=tenant))
    rc, out = check_config(str(p))
    assert rc == 0, out


@pytest.mark.parametrize("server,tenant,line,key", [
    ("client_signin_rate = 20", "", 3, "client_signin_rate"),
    ("client_signin_rate = 0/m", "", 3, "client_signin_rate"),
    ("client_signin_rate = abc/m", "", 3, "client_signin_rate"),
    ("client_signin_rate = 5/500ms", "", 3, "client_signin_rate"),
    ("client_signin_rate = 5/2d", "", 3, "client_signin_rate"),
    ("client_signin_rate = 2000000/m", "", 3, "client_signin_rate"),
    ("client_signin_rate = -1/m", "", 3, "client_signin_rate"),
    ("client_signin_table = 0", "", 3, "client_signin_table"),
    ("client_signin_table = 99999999", "", 3, "client_signin_table"),
    ("", "signin_rate = 10 per minute", 7, "signin_rate"),
    ("", "signin_rate = /m", 7, "signin_rate"),
])
def test_config_refuses_bad_rates(tmp_path, server, tenant, line, key):
    p = tmp_path / "sesame.conf"
    p.write_text(GOOD.format(server=server, tenant=tenant))
    rc, out = check_config(str(p))
    assert rc != 0, out
    assert "%s:%d: %s:" % (p, line, key) in out, out


def test_config_probe_interval(tmp_path):
    text = GOOD.format(server="", tenant="") + """
[provider franceconnect]
issuer = https://fc.example/api/v2
client_id = x
client_secret_file = {secret}
probe_interval = {probe}
"""
    secret = tmp_path / "s"
    secret.write_text("secret\n")
    os.chmod(secret, 0o600)
    p = tmp_path / "sesame.conf"
    p.write_text(text.format(secret=secret, probe="0"))
    assert check_config(str(p))[0] == 0
    p.write_text(text.format(secret=secret, probe="soon"))
    rc, out = check_config(str(p))
    assert rc != 0 and ": probe_interval: " in out, out
