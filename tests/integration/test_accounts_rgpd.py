"""A citizen's data on request and retention, with the real daemon
(accounts_env.py): a sign-in records the account's last sign-in, `export`
gives the account, its links and its sessions as the daemon wrote them,
`purge` erases the inactive accounts and their sessions stop working at
once while the active ones keep theirs, and the account records in Redis
hold no name, birthdate or sub in clear."""

import datetime
import json
import os
import re
import time

import pytest

import accounts_env as env
from accounts_env import AccountsStack, provider, sub_of


class AuditedStack(AccountsStack):
    """The accounts stack with an audit journal, for export."""

    def conf_text(self):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        key = os.path.join(self.tmp, "audit.pem")
        with open(key, "wb") as f:
            f.write(ed25519.Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
        os.chmod(key, 0o600)
        self.audit_log = os.path.join(self.tmp, "audit.log")
        return super().conf_text().replace(
            "[server]\n", "[server]\naudit_log = %s\naudit_key_file = %s\n"
            % (self.audit_log, key), 1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = AuditedStack(str(tmp_path_factory.mktemp("rgpd")))
    yield s
    s.stop()


def iso(text):
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", text), text
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def show(stack, account):
    rc, out, err = stack.tool("cree", "creer", "show", account)
    assert rc == 0, err
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def signed_in(stack, login):
    b = stack.browser()
    assert stack.sign_in(b, "creer", login).status == 303
    b.account = stack.echoed_headers(b, "creer", "/demarches")["x-sesame-account"][0]
    return b


def test_sign_in_records_the_last_sign_in(stack):
    t0 = int(time.time())
    b = signed_in(stack, "marie")
    t1 = int(time.time())
    fields = show(stack, b.account)
    assert fields["origin"] == "created"
    assert t0 <= iso(fields["created"]) <= t1
    assert t0 <= iso(fields["last_signin"]) <= t1
    first = iso(fields["last_signin"])
    # browsing does not count as a sign-in; signing in again does
    time.sleep(1.1)
    assert stack.get(b, "creer", "/demarches").status == 200
    assert iso(show(stack, b.account)["last_signin"]) == first
    b2 = signed_in(stack, "marie")
    assert b2.account == b.account
    assert iso(show(stack, b.account)["last_signin"]) > first
    rc, out, err = stack.tool("cree", "creer", "list")
    row = [l.split("\t") for l in out.splitlines() if l.startswith(b.account + "\t")][0]
    assert row[1] == "created" and row[4] == "1" and row[5] == "2"
    assert row[3] == show(stack, b.account)["last_signin"]


def test_export_gives_account_links_and_sessions(stack):
    b = signed_in(stack, "karim")
    b2 = signed_in(stack, "karim")
    rc, out, err = stack.tool("cree", "creer", "export", b.account)
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["tenant"] == "creer" and doc["account_id"] == b.account
    assert doc["account"]["id"] == b.account and doc["account"]["origin"] == "created"
    assert doc["account"]["personal_data"] == {}  # created at sign-in: nothing kept
    assert doc["links"] == [{"provider": provider("creer"), "sub": sub_of("creer", "karim")}]
    # the records are sealed with each citizen's cookie: their end is given,
    # and the sign-ins are in the audit events
    sessions = doc["sessions"]
    assert len(sessions) == 2
    now = time.time()
    for s in sessions:
        assert set(s) == {"ends_at_the_latest"}
        assert now - 5 < iso(s["ends_at_the_latest"]) <= now + 2 * 86400
    events = [e for e in doc["audit_events"] if e["event"] == "signin"]
    assert len(events) == 2, doc["audit_events"]
    assert all(e["tenant"] == "creer" and e["account"] == b.account and
               e["provider"] == provider("creer") and e["outcome"] == "success"
               for e in events)
    assert {e["event"] for e in doc["audit_events"]} >= {"account_created", "signin"}
    # never a cookie, and nobody else
    for browser in (b, b2):
        assert stack.session_cookie(browser, "creer") not in out
    assert "marie" not in out and sub_of("creer", "marie") not in out


def test_account_records_hold_no_personal_data(stack):
    # (account ids are key names: the commune picks ids that spell no name)
    csv = "SANTUCCI,Paola Maria,1990-01-09,2A004,99100,cit-0004,quartier=Port\n"
    rc, out, err = stack.tool("preinscrits", "pivot", "import", stack.write_csv("p.csv", csv))
    assert rc == 0, err
    b = stack.browser()
    assert stack.sign_in(b, "pivot", "paola").status == 303
    assert stack.echoed_headers(b, "pivot", "/demarches")["x-sesame-account"] == ["cit-0004"]
    keys = stack.redis.cli("--scan", "--pattern", env.ACCOUNT_PREFIX + "*").split()
    dump = []
    for k in keys:
        kind = stack.redis.cli("TYPE", k).strip()
        argv = {"string": ["GET", k], "hash": ["HGETALL", k], "set": ["SMEMBERS", k],
                "zset": ["ZRANGE", k, "0", "-1", "WITHSCORES"]}[kind]
        dump += [k, stack.redis.cli(*argv)]
    dump = "\n".join(dump)
    for word in ["SANTUCCI", "Paola", "Maria", "1990-01-09", "2A004", "Port",
                 sub_of("pivot", "paola"), sub_of("creer", "marie")]:
        assert not re.search(r"(?<![A-Za-z0-9])%s(?![A-Za-z0-9])" % re.escape(word), dump,
                             re.I), word
    rc, out, err = stack.tool("preinscrits", "pivot", "search", "--name", "paola santucci")
    assert rc == 0 and "\ncit-0004\tSANTUCCI\tPaola Maria\t1990-01-09\t2A004\t99100\t" in out


def test_purge_erases_inactive_accounts_and_their_sessions(stack):
    old = signed_in(stack, "alex")
    old2 = signed_in(stack, "alex")
    time.sleep(3.2)
    fresh = signed_in(stack, "jean")
    rc, out, err = stack.tool("cree", "creer", "list")
    rows = {l.split("\t")[0]: l.split("\t") for l in out.splitlines()[2:]}
    cutoff = time.time() - 2
    inactive = {a for a, r in rows.items() if r[3] == "never" or iso(r[3]) < cutoff - 1}
    assert old.account in inactive and fresh.account not in inactive

    rc, out, err = stack.tool("cree", "creer", "purge", "--inactive-since", "2s", "--dry-run")
    assert rc == 0 and ("would erase %s" % old.account) in out
    assert stack.get(old, "creer", "/demarches").status == 200

    rc, out, err = stack.tool("cree", "creer", "purge", "--inactive-since", "2s")
    assert rc == 0, err
    erased = set(re.findall(r"^erased (\S+) \(", out, re.M))
    assert erased == inactive, out
    assert ("erased %s (" % old.account) in out and "2 sessions revoked" in out
    # the purged citizen's cookies stop working at once; nothing reaches the
    # upstream; the active citizen keeps the session
    upstream = stack.upstream_requests()
    for b in (old, old2):
        assert stack.get(b, "creer", "/demarches").status == 302
    assert stack.upstream_requests() == upstream
    assert stack.get(fresh, "creer", "/demarches").status == 200
    keys = stack.redis.cli("--scan", "--pattern", "*").split()
    assert not any(old.account in k for k in keys)
    assert stack.tool("cree", "creer", "show", old.account)[0] == 3
    # signing in again makes a new account (the old one is gone for good)
    again = signed_in(stack, "alex")
    assert again.account != old.account
