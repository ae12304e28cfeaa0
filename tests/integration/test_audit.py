"""The audit trail end to end (gateway/audit/audit.h), with real processes:
redis-server, the mock FranceConnect, the echo upstream and one `sesame`
serving three communes whose accounts live in the redis plugin (creer:
accounts created at sign-in, client addresses recorded; pivot: pre-registered
citizens linked by identité pivot; refus: policy deny).

A scripted day (sign-ins, refusals, an import, an account created, one
linked, sesame-accounts commands with their operator, a revocation, a
logout, an erasure, a refused and an accepted reload) produces the expected
journal, in order; `sesame-audit verify` passes on it and fails, naming the
line, after each tampering (a byte changed, a line removed, two lines
swapped, a line inserted, the last checkpoint removed); the chain verifies
across a rotation (rename + SIGUSR1, rename + SIGHUP, rename + restart);
`sesame-audit show` finds a citizen's lines; `sesame -t` refuses a bad audit
key."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "mockfc"))

import harness  # noqa: E402
from accounts_env import client_id, provider, route, sub_of, write_secret  # noqa: E402
from sesame_env import BUILDDIR, Echo, Redis, Sesame, check_config, free_port  # noqa: E402
from signin_env import Browser, sign_in  # noqa: E402

TOOL = os.path.join(BUILDDIR, "sesame-accounts")
AUDIT = os.path.join(BUILDDIR, "sesame-audit")
TENANTS = ["creer", "pivot", "refus"]
SCOPES = ("openid given_name family_name birthdate gender birthplace birthcountry email "
          "preferred_username")
OPERATOR = "agent.dupont"
PIVOT_CSV = ("family_name,given_name,birthdate,birthplace,birthcountry,account_id\n"
             "MARTIN,Marie Claire Odile,1962-08-24,75107,99100,marie-001\n")


def make_audit_key(path):
    """An Ed25519 private key (PEM, PKCS#8, chmod 600) for audit_key_file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(path, 0o600)


class AuditStack:
    def __init__(self, tmp):
        self.tmp = tmp
        self.port = free_port()
        self.redis = self.mock = self.echo = self.gw = None
        self.logdir = os.path.join(tmp, "log")
        os.makedirs(self.logdir)
        self.journal = os.path.join(self.logdir, "audit.log")
        self.audit_key = os.path.join(tmp, "audit.pem")
        make_audit_key(self.audit_key)
        try:
            self.redis = Redis(tmp)
            self.mock = harness.start_mockfc(os.path.join(tmp, "mockfc"), self.clients())
            self.echo = Echo(tmp)
            self.start()
        except BaseException:
            self.stop()
            raise

    def start(self):
        self.gw = Sesame(self.tmp, self.conf_text(), port=self.port)

    def clients(self):
        return [{
            "client_id": client_id(t),
            "client_secret": "secret-%s-0123456789abcdef" % t,
            "id_token_signed_response_alg": "ES256",
            "redirect_uris": ["http://%s.localhost:%d/sesame/callback" % (t, self.port)],
            "post_logout_redirect_uris": ["http://%s.localhost:%d/sesame/logout/callback"
                                          % (t, self.port)],
        } for t in TENANTS]

    def conf_text(self, extra_server=""):
        tmp, redis = self.tmp, "127.0.0.1:%d" % self.redis.port
        key = write_secret(os.path.join(tmp, "session.key"),
                           "c2Vzc2lvbi1rZXktZm9yLXRlc3RzLW9ubHktMDEyMzQ1Njc4OQ==")
        akey = write_secret(os.path.join(tmp, "accounts.key"),
                            "YWNjb3VudHMta2V5LWZvci10ZXN0cy1vbmx5LTAxMjM0NTY3ODk=")
        parts = ["""[server]
listen = 127.0.0.1:{port}
workers = 2
error_log = {tmp}/sesame-error.log
access_log = {tmp}/sesame-access.log
log_level = debug
plugin_timeout = 5s
audit_log = {journal}
audit_key_file = {audit_key}
audit_checkpoint = 4
{extra}
[redis]
address = {redis}
command_timeout = 500ms
connect_timeout = 500ms

[session]
secret_file = {key}
""".format(port=self.port, tmp=tmp, journal=self.journal, audit_key=self.audit_key,
           extra=extra_server, redis=redis, key=key)]
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
        opts = ("plugin = redis\naddress = %s\nprefix = comptes:\nsession_prefix = sesame:\n"
                "key_file = %s\n" % (redis, akey))
        parts.append("[accounts cree]\n" + opts + "match = sub\npolicy = create\n")
        parts.append("[accounts preinscrits]\n" + opts + "match = pivot\npolicy = link-only\n")
        parts.append("[accounts refus]\n" + opts + "match = pivot\npolicy = deny\n")
        sections = {"creer": "cree", "pivot": "preinscrits", "refus": "refus"}
        for t in TENANTS:
            parts.append("""[tenant {t}]
display_name = Ville de {T}
public_url = http://{t}.localhost:{port}
provider = {p}
accounts = {a}
{client}""".format(t=t, T=t.capitalize(), port=self.port, p=provider(t), a=sections[t],
                   client="audit_client_address = on\n" if t == "creer" else ""))
            parts.append(route("%s-demarches" % t, t, "/demarches", self.echo.url))
        return "\n".join(parts)

    def tool(self, section, tenant, *args):
        env = dict(os.environ, SUDO_USER=OPERATOR)
        p = subprocess.run([TOOL, "-c", self.gw.conf_path, "-a", section, "-t", tenant]
                           + list(args), capture_output=True, text=True, timeout=60, env=env)
        return p.returncode, p.stdout, p.stderr

    def sign_in(self, browser, tenant, login):
        r, _ = sign_in(browser, self.mock, self.port, login, host="%s.localhost" % tenant)
        return r

    def stop(self):
        for p in (self.gw, self.echo, self.mock, self.redis):
            if p is None:
                continue
            try:
                p.stop()
            except Exception:  # noqa: BLE001
                pass


def lines_of(path):
    """The complete lines of a journal (a line being written is left out)."""
    with open(path, "rb") as f:
        data = f.read().decode("utf-8")
    out = data.split("\n")
    return out[:-1]  # the part after the last line end is not a line yet


def events_of(path):
    return [json.loads(line) for line in lines_of(path)]


def wait_for(pred, timeout=10.0, what="condition"):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def verify(*files, key=None):
    argv = [AUDIT, "verify"] + (["--key", key] if key else []) + list(files)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


class Day:
    """Reads the journal's new events as the test goes (checkpoints aside)."""

    def __init__(self, stack):
        self.stack = stack
        self.seen = 0

    def expect(self, names, timeout=10.0):
        def ready():
            evs = [e for e in events_of(self.stack.journal) if e["event"] != "checkpoint"]
            new = evs[self.seen:]
            return new if len(new) >= len(names) else None

        new = wait_for(ready, timeout, "events %s" % names)
        assert [e["event"] for e in new] == names, new
        self.seen += len(names)
        return new


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = AuditStack(str(tmp_path_factory.mktemp("audit")))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def day(stack):
    """Runs the scripted day once; the tests below read its journal."""
    d = Day(stack)
    log = {}
    opened, loaded = d.expect(["journal_opened", "config_loaded"])
    assert opened["detail"]["program"] == "sesame"
    assert loaded["detail"]["trigger"] == "start" and loaded["outcome"] == "success"

    # 1. marie signs in at creer: her account is created
    b = Browser(stack.port)
    assert stack.sign_in(b, "creer", "marie").status == 303
    created, signin = d.expect(["account_created", "signin"])
    account = created["account"]
    assert created["tenant"] == "creer" and created["provider"] == provider("creer")
    assert created["detail"] == {"by": "signin"}
    assert signin["outcome"] == "success" and "reason" not in signin
    assert signin["account"] == account and signin["provider"] == provider("creer")
    assert signin["client"] == "127.0.0.1"  # audit_client_address = on
    assert signin["detail"]["acr"] == "eidas1"
    log["creer_account"] = account
    log["creer_browser"] = b

    # 2. an agent imports the commune's file
    csv = os.path.join(stack.tmp, "pivot.csv")
    with open(csv, "w", encoding="utf-8") as f:
        f.write(PIVOT_CSV)
    rc, out, err = stack.tool("preinscrits", "pivot", "import", csv)
    assert rc == 0, err
    created, cli = d.expect(["account_created", "accounts_cli"])
    assert created["account"] == "marie-001" and created["operator"] == OPERATOR
    assert created["detail"]["by"] == "import"
    assert cli["detail"] == {"action": "import", "exit": 0} and cli["operator"] == OPERATOR
    assert cli["outcome"] == "success" and cli["tenant"] == "pivot"

    # 3. marie signs in at pivot: linked to her pre-registered record
    b2 = Browser(stack.port)
    assert stack.sign_in(b2, "pivot", "marie").status == 303
    linked, signin = d.expect(["account_linked", "signin"])
    assert linked["account"] == "marie-001" and linked["provider"] == provider("pivot")
    assert signin["account"] == "marie-001" and signin["outcome"] == "success"
    assert "client" not in signin  # audit_client_address off

    # 4. refused by the commune's policy
    assert stack.sign_in(Browser(stack.port), "refus", "marie").status == 403
    (refused,) = d.expect(["signin"])
    assert (refused["outcome"], refused["reason"]) == ("refused", "account_denied")
    assert refused["tenant"] == "refus" and "account" not in refused

    # 5. a callback URL replayed from another browser
    b3 = Browser(stack.port)
    r = b3.get("http://creer.localhost:%d/sesame/login?return_to=%%2Fdemarches" % stack.port)
    stack.mock.autologin("marie")
    a = harness.http_request(r.getheader("Location"), ssl_context=stack.mock.ssl_context())
    assert Browser(stack.port).get(a.header("Location")).status == 400
    (refused,) = d.expect(["signin"])
    assert (refused["outcome"], refused["reason"]) == ("refused", "browser_mismatch")

    # 6. an agent looks at the account: recorded too
    rc, out, err = stack.tool("preinscrits", "pivot", "show", "marie-001")
    assert rc == 0, err
    (cli,) = d.expect(["accounts_cli"])
    assert cli["account"] == "marie-001" and cli["detail"]["action"] == "show"

    # 7. her sessions at pivot are revoked
    rc, out, err = stack.tool("preinscrits", "pivot", "revoke", "marie-001")
    assert rc == 0, err
    revoked, cli = d.expect(["sessions_revoked", "accounts_cli"])
    assert revoked["account"] == "marie-001" and revoked["detail"] == {"sessions": 1}
    assert revoked["operator"] == OPERATOR and cli["detail"]["action"] == "revoke"

    # 8. she signs out at creer
    base = "http://creer.localhost:%d" % stack.port
    page = b.get(base + "/sesame/logout")
    token = re.search(r'name="csrf" value="([^"]+)"', page.body.decode()).group(1)
    r = b.request("POST", base + "/sesame/logout", body="csrf=" + token,
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status in (200, 302), r.status
    (logout,) = d.expect(["logout"])
    assert logout["account"] == account and logout["tenant"] == "creer"
    assert logout["client"] == "127.0.0.1"

    # 9. erasure of her creer account
    rc, out, err = stack.tool("cree", "creer", "delete", account)
    assert rc == 0, err
    erased, cli = d.expect(["account_erased", "accounts_cli"])
    assert erased["account"] == account and erased["operator"] == OPERATOR
    assert cli["detail"] == {"action": "delete", "exit": 0}

    # a command that fails is recorded with its outcome
    rc, out, err = stack.tool("cree", "creer", "show", "nobody")
    assert rc == 3
    (cli,) = d.expect(["accounts_cli"])
    assert (cli["outcome"], cli["reason"], cli["detail"]["exit"]) == ("refused", "not_found", 3)

    # 10. a reload refused, then one accepted
    stack.gw.write_conf(stack.conf_text(extra_server="no_such_key = 1\n"))
    stack.gw.reload()
    (refused,) = d.expect(["config_refused"])
    assert refused["outcome"] == "refused" and refused["detail"]["errors"] == 1
    stack.gw.write_conf(stack.conf_text())
    stack.gw.reload()
    (loaded,) = d.expect(["config_loaded"])
    assert loaded["detail"]["trigger"] == "reload"

    # SIGUSR1 signs what is pending
    stack.gw.proc.signal(signal.SIGUSR1)
    wait_for(lambda: events_of(stack.journal)[-1]["event"] == "checkpoint", what="a checkpoint")
    log["journal"] = shutil.copy(stack.journal, os.path.join(stack.tmp, "day.log"))
    log["sub"] = sub_of("creer", "marie")
    log["cookies"] = [v for jar in b.cookies.values() for v in jar.values()]
    return log


def test_the_day_verifies(stack, day):
    rc, out = verify(stack.journal)
    assert rc == 0, out
    assert out.startswith("OK: ")
    # the format: seq, time, event first; prev and hash last; chain and checkpoints
    lines = lines_of(stack.journal)
    evs = [json.loads(line) for line in lines]
    assert all(line.startswith('{"seq":%d,"time":"' % (i + 1)) for i, line in enumerate(lines))
    assert all(re.search(r',"prev":"[0-9a-f]{64}","hash":"[0-9a-f]{64}"\}$', line) for line in lines)
    assert all(evs[i]["prev"] == evs[i - 1]["hash"] for i in range(1, len(evs)))
    cps = [e for e in evs if e["event"] == "checkpoint"]
    assert cps and all(e["detail"]["alg"] == "EdDSA" and e["sig"] for e in cps)
    # audit_checkpoint = 4: a checkpoint at each seq multiple of 4 that is free
    # (plus those of sesame-accounts when it ends, of SIGUSR1...)
    assert any(e["seq"] % 4 == 0 for e in cps)
    seqs = [e["seq"] for e in cps]
    assert all(b - a <= 4 for a, b in zip([0] + seqs, seqs)), seqs
    assert os.path.exists(stack.journal + ".pub")


def test_the_journal_is_pseudonymous(stack, day):
    text = open(stack.journal, encoding="utf-8").read()
    for word in ("MARTIN", "Marie", "1962-08-24", "75107", day["sub"], sub_of("pivot", "marie")):
        assert word not in text, word
    for cookie in day["cookies"]:
        assert cookie not in text


def tampered(stack, day, name, edit):
    lines = lines_of(day["journal"])
    path = os.path.join(stack.tmp, name)
    lines = edit(lines)
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    return path


def index_of(lines, pred, start=0):
    for i in range(start, len(lines)):
        if pred(json.loads(lines[i])):
            return i
    raise AssertionError("no such line")


def assert_fails_at(stack, path, line, reason):
    rc, out = verify(path, key=stack.journal + ".pub")
    assert rc == 1, out
    assert out.startswith("%s:%d: %s" % (path, line, reason)), out


def test_one_byte_changed(stack, day):
    lines = lines_of(day["journal"])
    k = index_of(lines, lambda e: e["event"] == "account_erased")

    def edit(ls):
        i = ls[k].index('"account":"') + len('"account":"')
        ls[k] = ls[k][:i] + ("Z" if ls[k][i] != "Z" else "Y") + ls[k][i + 1:]
        return ls

    assert_fails_at(stack, tampered(stack, day, "byte.log", edit), k + 1, "changed")


def test_line_removed(stack, day):
    lines = lines_of(day["journal"])
    k = index_of(lines, lambda e: e["event"] == "account_erased")
    assert_fails_at(stack, tampered(stack, day, "removed.log", lambda ls: ls[:k] + ls[k + 1:]),
                    k + 1, "removed")


def test_two_lines_swapped(stack, day):
    lines = lines_of(day["journal"])
    k = index_of(lines, lambda e: e["event"] == "sessions_revoked")

    def edit(ls):
        ls[k], ls[k + 1] = ls[k + 1], ls[k]
        return ls

    assert_fails_at(stack, tampered(stack, day, "swapped.log", edit), k + 1, "reordered")


def test_line_inserted(stack, day):
    lines = lines_of(day["journal"])
    k = index_of(lines, lambda e: e["event"] == "logout")
    forged = lines[index_of(lines, lambda e: e["event"] == "signin")]
    assert_fails_at(stack, tampered(stack, day, "inserted.log",
                                    lambda ls: ls[:k] + [forged] + ls[k:]), k + 1, "inserted")


def test_last_checkpoint_removed(stack, day):
    lines = lines_of(day["journal"])
    assert json.loads(lines[-1])["event"] == "checkpoint"
    last_but_one = max(i for i in range(len(lines) - 1)
                       if json.loads(lines[i])["event"] == "checkpoint")
    assert_fails_at(stack, tampered(stack, day, "nolast.log", lambda ls: ls[:-1]),
                    last_but_one + 2, "unsigned")


def test_show_finds_a_citizens_lines(stack, day):
    p = subprocess.run([AUDIT, "show", "--account", "marie-001", "--tenant", "pivot",
                        stack.journal], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    evs = [json.loads(line) for line in p.stdout.splitlines()]
    assert [e["event"] for e in evs] == ["account_created", "account_linked", "signin",
                                         "accounts_cli", "sessions_revoked", "accounts_cli"]
    today = evs[0]["time"][:10]
    p = subprocess.run([AUDIT, "show", "--event", "account_erased", "--since", today, "--until",
                        today, stack.journal], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 1
    p = subprocess.run([AUDIT, "show", "--until", "2000-01-01", stack.journal],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and p.stdout == ""


def rotate(stack, n):
    old = "%s.%d" % (stack.journal, n)
    os.rename(stack.journal, old)
    return old


def test_rotation_with_sigusr1_and_sighup(stack, day):
    b = Browser(stack.port)
    first = rotate(stack, 1)
    stack.gw.proc.signal(signal.SIGUSR1)  # what logrotate's postrotate sends
    wait_for(lambda: os.path.exists(stack.journal) and len(lines_of(stack.journal)) >= 2,
             what="the new file")
    assert json.loads(lines_of(stack.journal)[0])["event"] == "journal_opened"
    assert json.loads(lines_of(first)[-1])["event"] == "checkpoint"
    assert stack.sign_in(b, "creer", "jean").status == 303
    wait_for(lambda: any(e["event"] == "signin" for e in events_of(stack.journal)),
             what="the sign-in")
    # renamed again, and a reload (its config_loaded lands in the new file)
    second = rotate(stack, 2)
    stack.gw.reload()
    wait_for(lambda: os.path.exists(stack.journal) and
             any(e["event"] == "config_loaded" for e in events_of(stack.journal)),
             what="the reload's line")
    stack.gw.proc.signal(signal.SIGUSR1)
    wait_for(lambda: events_of(stack.journal)[-1]["event"] == "checkpoint", what="a checkpoint")
    rc, out = verify(first, second, stack.journal)
    assert rc == 0, out
    assert "3 files" in out
    # each file alone verifies too; out of order, or one missing, they do not
    for f in (first, second, stack.journal):
        assert verify(f, key=stack.journal + ".pub")[0] == 0
    rc, out = verify(first, stack.journal, key=stack.journal + ".pub")
    assert rc == 1 and out.startswith(stack.journal + ":1: removed"), out
    rc, out = verify(second, first, key=stack.journal + ".pub")
    assert rc == 1 and out.startswith(first + ":1: "), out


def test_rotation_across_a_restart(stack, day):
    stack.gw.stop()  # a final checkpoint
    before = rotate(stack, 3)
    assert json.loads(lines_of(before)[-1])["event"] == "checkpoint"
    stack.start()
    wait_for(lambda: os.path.exists(stack.journal) and
             any(e["event"] == "config_loaded" for e in events_of(stack.journal)),
             what="the restart's lines")
    assert stack.sign_in(Browser(stack.port), "creer", "marie").status == 303
    stack.gw.stop()
    rc, out = verify(before, stack.journal)
    assert rc == 0, out
    stack.start()


def test_config_check_refuses_bad_audit_keys(stack, tmp_path):
    base = stack.conf_text()
    no_key = base.replace("audit_key_file = %s\n" % stack.audit_key, "")
    p = tmp_path / "nokey.conf"
    p.write_text(no_key)
    rc, out = check_config(str(p))
    assert rc == 1 and re.search(r"nokey\.conf:\d+: audit_log: the journal needs audit_key_file",
                                 out), out
    open_key = tmp_path / "open.pem"
    shutil.copy(stack.audit_key, open_key)
    os.chmod(open_key, 0o644)
    p = tmp_path / "open.conf"
    p.write_text(base.replace(stack.audit_key, str(open_key)))
    rc, out = check_config(str(p))
    assert rc == 1 and "audit_key_file: " in out and "readable by other users" in out, out
    rsa = tmp_path / "rsa.pem"
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa as rsa_mod
    k = rsa_mod.generate_private_key(public_exponent=65537, key_size=2048)
    rsa.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    os.chmod(rsa, 0o600)
    p = tmp_path / "rsa.conf"
    p.write_text(base.replace(stack.audit_key, str(rsa)))
    rc, out = check_config(str(p))
    assert rc == 1 and "not an EC P-256 (ES256) or Ed25519 key" in out, out
