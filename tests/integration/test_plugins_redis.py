"""The `redis` account plugin and the `sesame-accounts` tool against a real
redis-server: CSV import of pre-registered citizens (French Excel files
included), sign-ins resolved by the plugin (loaded by
tests/unit/plugins/plugin_driver as the daemon loads it), show / find-sub /
link / unlink / delete, erasure of sessions, the records encrypted at rest,
and list / search / export / purge.

Test identities are those of ../shared/fc-test-identities.csv.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("SESAME_SRCDIR", os.path.abspath(os.path.join(HERE, "..", "..")))
BUILDDIR = os.environ.get("SESAME_BUILDDIR", SRCDIR)
PLUGIN_DIR = os.environ.get("SESAME_PLUGIN_DIR", os.path.join(BUILDDIR, ".libs"))
DRIVER = os.path.join(BUILDDIR, "tests", "unit", "plugins", "plugin_driver")
TOOL = os.path.join(BUILDDIR, "sesame-accounts")
TENANT = "ville-a"

PEOPLE = {
    "marie": ("a1b2v1", "Marie Claire Odile", "MARTIN", "1962-08-24", "75107", "99100"),
    "jean": ("c3d4v1", "Jean-Baptiste", "D'ALMEIDA-LÉVÊQUE", "1979-03-02", "33063", "99100"),
    "karim": ("k5k5v1", "Karim Yanis", "BENALI", "1985-11-30", "", "99352"),
    "paola": ("p7p7v1", "Paola Maria", "SANTUCCI", "1990-01-09", "2A004", "99100"),
    "pierre1": ("p1p1v1", "Pierre", "BERNARD", "1970-04-12", "31555", "99100"),
    "pierre2": ("p2p2v1", "Pierre", "BERNARD", "1970-04-12", "67482", "99100"),
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    def __init__(self, tmpdir):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmpdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(1000):
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited")
            try:
                if self.cli("PING") == "PONG":
                    return
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.01)
        raise RuntimeError("redis-server did not answer")

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def cli(self, *args):
        out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "--raw"]
                             + list(args), capture_output=True, text=True, check=True, timeout=30)
        return out.stdout.rstrip("\n")

    def keys(self, pattern="*"):
        out = self.cli("KEYS", pattern)
        return sorted(k for k in out.split("\n") if k)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("redis")
    r = Redis(str(tmp))
    r.key_file = str(tmp / "accounts.key")
    with open(r.key_file, "w") as f:
        f.write("YWNjb3VudHMta2V5LWZvci10ZXN0cy1vbmx5LTAxMjM0NTY3\n")
    os.chmod(r.key_file, 0o600)
    yield r
    r.stop()


@pytest.fixture
def db(redis):
    redis.cli("FLUSHALL")
    return redis


def tool(db, *args, config=None):
    argv = [TOOL]
    if config:
        argv += ["-c", config]
    else:
        argv += ["--address", db.address, "--prefix", "t:", "--tenant", TENANT,
                 "--key-file", db.key_file]
    p = subprocess.run(argv + list(args), capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def sign_in(db, who, match="pivot", policy="link-only", sub=None, tenant=TENANT):
    s, given, family, date, place, country = PEOPLE[who]
    argv = [DRIVER, "redis", "-o", "address=" + db.address, "-o", "prefix=t:",
            "-o", "key_file=" + db.key_file,
            "-o", "match=" + match, "-o", "policy=" + policy,
            "-t", tenant, "-p", "fc", "-s", sub or s,
            "-c", "given_name=" + given, "-c", "family_name=" + family,
            "-c", "birthdate=" + date, "-c", "birthplace=" + place,
            "-c", "birthcountry=" + country, "-c", "gender=male"]
    env = dict(os.environ, SESAME_PLUGIN_DIR=PLUGIN_DIR)
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def write_csv(tmp_path, text, name="citoyens.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


CSV = """\ufefffamily_name,given_name,birthdate,birthplace,birthcountry,account_id,attributes
# citoyens pré-inscrits par la mairie
MARTIN,Marie Claire Odile,1962-08-24,75107,99100,marie-001,quartier=Centre,abonne=oui
"D'ALMEIDA LEVEQUE","JEAN BAPTISTE",1979-03-02,33063,99100,jean-002
BENALI,Karim Yanis,1985-11-30,,99352,,quartier=Gare

Santucci,Paola Maria,1990-01-09,2a004,99100,"quartier=Vieux, port"
"""


def imported_ids(stdout):
    ids = {}
    for line in stdout.splitlines():
        if line.startswith("line "):
            n, rest = line[5:].split(": account ")
            ids[int(n)] = rest
    return ids


def test_import_then_pivot_links(db, tmp_path):
    rc, out, err = tool(db, "import", write_csv(tmp_path, CSV))
    assert rc == 0, err
    ids = imported_ids(out)
    assert ids[3] == "marie-001" and ids[4] == "jean-002"
    assert len(ids[5]) == 22 and len(ids[7]) == 22  # generated
    assert "imported 4 accounts into tenant ville-a" in out

    # first sign-in links by pivot identity, the attributes come along
    r = sign_in(db, "marie")
    assert r == {"status": "found", "account_id": "marie-001",
                 "attributes": {"quartier": "Centre", "abonne": "oui"}}
    # accents, apostrophe, hyphen and case differ from the commune's record
    assert sign_in(db, "jean")["account_id"] == "jean-002"
    # born abroad: empty birthplace on both sides
    assert sign_in(db, "karim") == {"status": "found", "account_id": ids[5],
                                    "attributes": {"quartier": "Gare"}}
    # lower-case Corsican code in the file, quoted attribute with a comma
    assert sign_in(db, "paola") == {"status": "found", "account_id": ids[7],
                                    "attributes": {"quartier": "Vieux, port"}}
    # the second sign-in finds the account by sub
    assert sign_in(db, "marie", match="sub")["account_id"] == "marie-001"

    rc, out, err = tool(db, "find-sub", "fc", "a1b2v1")
    assert (rc, out) == (0, "marie-001\n")
    rc, out, err = tool(db, "find-sub", "fc", "nobodyv1")
    assert rc == 3
    rc, out, err = tool(db, "show", "marie-001")
    assert rc == 0, err
    lines = out.splitlines()
    assert "id: marie-001" in lines
    assert "origin: import" in lines
    assert "family_name: MARTIN" in lines
    assert "links: 1" in lines and "  fc:a1b2v1" in lines
    assert "  quartier=Centre" in lines
    assert "sessions: 0" in lines
    rc, out, err = tool(db, "show", "nobody")
    assert rc == 3


def test_import_is_all_or_nothing(db, tmp_path):
    bad = ("MARTIN,Marie,1962-08-24,75107,99100,ok-1\n"
           "MARTIN,Marie,24/08/1962,75107,99100\n"
           "MARTIN,Marie,1962-08-24\n"
           "\"MARTIN,Marie,1962-08-24,75107,99100\n"
           "MARTIN,Marie,1962-08-24,75107,99100,ok-1\n"
           "MARTIN,Marie,1962-08-24,75107,99100,ok-2,quartier\n"
           "MARTIN,Marie,1962-08-24,75107,99100,ok-3,bad name=x\n")
    rc, out, err = tool(db, "import", write_csv(tmp_path, bad))
    assert rc == 1
    assert out == ""
    assert "line 2: birthdate: not YYYY-MM-DD" not in err  # parse errors come first
    assert "line 3: expected at least 5 fields" in err
    assert "line 4: unterminated quoted field" in err
    assert "line 6: field 7: expected attr=value" in err
    assert err.rstrip().endswith("sesame-accounts: nothing imported")
    assert db.keys() == []

    # with the syntax fixed, the store's checks report the remaining rows
    bad2 = ("MARTIN,Marie,1962-08-24,75107,99100,ok-1\n"
            "MARTIN,Anne,24/08/1962,75107,99100\n"
            "MARTIN,Bea,1962-08-24,75107,99100,ok-1\n"
            "MARTIN,Chloe,1962-08-24,75107,99100,ok-3,bad name=x\n")
    rc, out, err = tool(db, "import", write_csv(tmp_path, bad2))
    assert rc == 1
    assert err.splitlines() == [
        "line 2: birthdate: not YYYY-MM-DD",
        "line 3: account_id ok-1 already used on line 1",
        "line 4: attribute #1: name must be 1..64 of [A-Za-z0-9_.-]",
        "sesame-accounts: nothing imported",
    ]
    assert db.keys() == []

    # an id already present is a bad row too
    rc, out, err = tool(db, "import", write_csv(tmp_path, "MARTIN,Marie,1962-08-24,75107,99100,m1\n"))
    assert rc == 0, err
    rc, out, err = tool(db, "import", write_csv(
        tmp_path, "DURAND,Paul,1960-10-10,69383,99100,p1\nMARTIN,Marie,1962-08-24,75107,99100,m1\n"))
    assert rc == 1
    assert "line 2: account m1 already exists" in err
    assert db.cli("EXISTS", "t:acct:ville-a:id:p1") == "0"
    # an empty file imports nothing
    rc, out, err = tool(db, "import", write_csv(tmp_path, "# nothing\n"))
    assert rc == 1 and "no citizen in the file" in err


def test_first_sign_in_creates_second_finds(db):
    r1 = sign_in(db, "marie", match="sub", policy="create")
    assert r1["status"] == "found"
    r2 = sign_in(db, "marie", match="sub", policy="create")
    assert r2 == r1
    rc, out, err = tool(db, "show", r1["account_id"])
    assert "origin: created" in out.splitlines()
    assert "family_name" not in out  # nothing personal kept for created accounts
    # another commune, another account for the same person
    r3 = sign_in(db, "marie", match="sub", policy="create", tenant="ville-b")
    assert r3["account_id"] != r1["account_id"]


def test_homonyms_both_preregistered(db, tmp_path):
    csv = ("BERNARD,Pierre,1970-04-12,31555,99100,pierre-a\n"
           "BERNARD,Pierre,1970-04-12,67482,99100,pierre-b\n")
    assert tool(db, "import", write_csv(tmp_path, csv))[0] == 0
    assert sign_in(db, "pierre1") == {"status": "none", "reason": "link_only"}
    assert sign_in(db, "pierre2") == {"status": "none", "reason": "link_only"}
    assert db.keys("t:acct:*:sub:*") == []
    # an agent links them by hand
    rc, out, err = tool(db, "link", "pierre-a", "fc", "p1p1v1")
    assert rc == 0, err
    assert sign_in(db, "pierre1")["account_id"] == "pierre-a"
    assert sign_in(db, "pierre2")["status"] == "none"
    # a sub already linked elsewhere is not stolen
    rc, out, err = tool(db, "link", "pierre-b", "fc", "p1p1v1")
    assert rc == 1 and "already linked to another account" in err


def test_homonym_with_other_birthplace_not_linked(db, tmp_path):
    assert tool(db, "import", write_csv(
        tmp_path, "BERNARD,Pierre,1970-04-12,31555,99100,pierre-a\n"))[0] == 0
    assert sign_in(db, "pierre2") == {"status": "none", "reason": "link_only"}
    rc, out, err = tool(db, "show", "pierre-a")
    assert "links: 0" in out.splitlines()
    assert sign_in(db, "pierre1")["account_id"] == "pierre-a"
    assert sign_in(db, "pierre2")["status"] == "none"
    # with policy create, pierre2 gets his own new account
    r = sign_in(db, "pierre2", policy="create")
    assert r["status"] == "found" and r["account_id"] != "pierre-a"


def test_link_only_and_deny(db):
    assert sign_in(db, "marie", policy="link-only") == {"status": "none", "reason": "link_only"}
    assert sign_in(db, "marie", policy="deny") == {"status": "none", "reason": "deny"}
    assert db.keys() == []


def fake_sessions(db, account, hashes, prefix="t:"):
    for h in hashes:
        db.cli("SET", "%ss:%s" % (prefix, h), "encrypted")
    db.cli("SADD", "%sa:%s:%s" % (prefix, TENANT, account), *hashes)


def test_delete_erases_account_indexes_and_sessions(db, tmp_path):
    assert tool(db, "import", write_csv(tmp_path, CSV))[0] == 0
    assert sign_in(db, "marie")["account_id"] == "marie-001"
    fake_sessions(db, "marie-001", ["aa11", "bb22"])
    fake_sessions(db, "jean-002", ["cc33"])
    rc, out, err = tool(db, "show", "marie-001")
    assert "sessions: 2" in out.splitlines()
    before = db.keys()
    rc, out, err = tool(db, "delete", "marie-001")
    assert (rc, out) == (0, "account marie-001 deleted, 2 sessions revoked\n"), err
    after = db.keys()
    gone = set(before) - set(after)
    groups_gone = {k for k in gone if k.startswith("t:acct:ville-a:group:")}
    assert len(groups_gone) == 1  # marie's homonym group, now empty
    subs_gone = {k for k in gone if k.startswith("t:acct:ville-a:sub:")}
    assert len(subs_gone) == 1  # the (hashed) index of her sub
    # (the sign-in scores were hers only: the empty set is gone too)
    assert gone - groups_gone - subs_gone == {
        "t:acct:ville-a:id:marie-001", "t:acct:ville-a:subs:marie-001",
        "t:s:aa11", "t:s:bb22", "t:a:ville-a:marie-001", "t:acct:ville-a:signin"}
    # and her creation and sign-in scores
    assert db.cli("ZSCORE", "t:acct:ville-a:created", "marie-001") == ""
    assert db.cli("ZSCORE", "t:acct:ville-a:signin", "marie-001") == ""
    assert not any("marie-001" in k for k in after)
    assert "t:s:cc33" in after and "t:acct:ville-a:id:jean-002" in after
    # the person is unknown now
    assert sign_in(db, "marie")["status"] == "none"
    rc, out, err = tool(db, "delete", "marie-001")
    assert rc == 3


def test_unlink_keeps_account_revokes_sessions(db, tmp_path):
    assert tool(db, "import", write_csv(tmp_path, CSV))[0] == 0
    assert sign_in(db, "jean")["account_id"] == "jean-002"
    fake_sessions(db, "jean-002", ["dd44"])
    rc, out, err = tool(db, "unlink", "jean-002")
    assert (rc, out) == (0, "account jean-002: 1 links removed, 1 sessions revoked\n"), err
    assert tool(db, "find-sub", "fc", "c3d4v1")[0] == 3
    assert db.cli("EXISTS", "t:acct:ville-a:id:jean-002") == "1"
    assert db.cli("EXISTS", "t:s:dd44") == "0"
    # match = sub: not linked again; match = pivot: linked again at next sign-in
    assert sign_in(db, "jean", match="sub")["status"] == "none"
    assert sign_in(db, "jean")["account_id"] == "jean-002"


def test_with_configuration_file(db, tmp_path):
    conf = tmp_path / "sesame.conf"
    conf.write_text("""[server]
listen = 127.0.0.1:8080

[redis]
address = %(addr)s
prefix = sess:

[tenant ville-a]
public_url = http://ville-a.localhost:8080
accounts = citoyens

[route accueil]
tenant = ville-a
upstream = http://127.0.0.1:9000
access = public

[accounts citoyens]
plugin = redis
address = %(addr)s
prefix = t:
key_file = %(key)s
match = pivot
policy = link-only
""" % {"addr": db.address, "key": db.key_file})
    rc, out, err = tool(db, "import", write_csv(tmp_path, CSV), config=str(conf))
    assert rc == 0, err
    assert sign_in(db, "marie")["account_id"] == "marie-001"
    # sessions live under the [redis] prefix
    fake_sessions(db, "marie-001", ["ee55"], prefix="sess:")
    rc, out, err = tool(db, "-a", "citoyens", "delete", "marie-001", config=str(conf))
    assert (rc, out) == (0, "account marie-001 deleted, 1 sessions revoked\n"), err
    assert db.cli("EXISTS", "sess:s:ee55") == "0"
    # an unknown section is named in the error
    rc, out, err = tool(db, "-a", "nope", "show", "x", config=str(conf))
    assert rc == 1 and "no such [accounts] section" in err


def test_usage_errors(db):
    key = ["--key-file", db.key_file]
    p = subprocess.run([TOOL, "--address", db.address, "--tenant", TENANT, "frobnicate"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "unknown command frobnicate" in p.stderr
    p = subprocess.run([TOOL, "--address", db.address, "--tenant", TENANT, "show"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "show takes 1 argument" in p.stderr
    p = subprocess.run([TOOL, "--address", db.address] + key + ["show", "x"],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "no tenant" in p.stderr
    port = free_port()
    p = subprocess.run([TOOL, "--address", "127.0.0.1:%d" % port, "--tenant", TENANT] + key +
                       ["show", "x"], capture_output=True, text=True)
    assert p.returncode == 1 and "Connection refused" in p.stderr
    # every account command needs the records' key
    p = subprocess.run([TOOL, "--address", db.address, "--tenant", TENANT, "show", "x"],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "key_file: missing" in p.stderr and "--key-file" in p.stderr
    p = subprocess.run([TOOL, "--address", db.address, "--tenant", TENANT, "purge"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "give --inactive-since" in p.stderr


# ---------------------------------------------------------------- French Excel, dates, duplicates

# "CSV (séparateur: point-virgule)" as Excel writes it on a French Windows:
# Windows-1252, ';', CR LF, no BOM, rows padded with empty fields.
FRENCH_EXCEL = ("family_name;given_name;birthdate;birthplace;birthcountry;account_id;quartier\r\n"
                "D\u2019ALMEIDA-LÉVÊQUE;Jean-Baptiste;1979-03-02;33063;99100;jean-002;"
                "quartier=Centre\r\n"
                "FRANÇOIS;Hélène;1981-07-14;75056;99100;;quartier=Gare;;\r\n"
                "MARTIN;Marie Claire Odile;1962-08-24;75107;99100;marie-001;\r\n")


def test_import_french_excel_csv(db, tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(FRENCH_EXCEL.encode("cp1252"))
    assert b"\xc9" in path.read_bytes() and b"\xe8" in path.read_bytes()  # É, è
    rc, out, err = tool(db, "import", str(path))
    assert rc == 0, err
    assert "read as Windows-1252" in err
    ids = imported_ids(out)
    assert ids[2] == "jean-002" and ids[4] == "marie-001" and len(ids[3]) == 22
    assert "imported 3 accounts into tenant ville-a" in out
    # FranceConnect sends UTF-8: the accents and the typographic apostrophe
    # of the file match at sign-in
    assert sign_in(db, "jean") == {"status": "found", "account_id": "jean-002",
                                   "attributes": {"quartier": "Centre"}}
    assert sign_in(db, "marie")["account_id"] == "marie-001"
    rc, out, err = tool(db, "show", ids[3])
    lines = out.splitlines()
    assert "family_name: FRANÇOIS" in lines and "given_name: Hélène" in lines, out
    assert "  quartier=Gare" in lines
    rc, out, err = tool(db, "search", "--name", "francois helene")
    assert rc == 0 and ("\n%s\tFRANÇOIS\tHélène\t1981-07-14\t" % ids[3]) in out, out


def test_import_refuses_bad_dates_and_persons_already_present(db, tmp_path):
    bad = ("MARTIN;Anne;1962-02-30;75107;99100\n"
           "MARTIN;Bea;2999-01-01;75107;99100\n"
           "MARTIN;Chloe;2000-02-29;75107;99100\n"
           "BERNARD;Pierre;1970-04-12;31555;99100;pierre-a\n"
           "Bernard;PIERRE;1970-04-12;31555;99100;pierre-b\n")
    rc, out, err = tool(db, "import", write_csv(tmp_path, bad))
    assert rc == 1 and out == ""
    assert err.splitlines() == [
        "line 1: birthdate: not a calendar date",
        "line 2: birthdate: in the future",
        "line 5: the same person (names, birth date and place) as line 4",
        "sesame-accounts: nothing imported",
    ]
    assert db.keys() == []
    rc, out, err = tool(db, "import", write_csv(
        tmp_path, "BERNARD;Pierre;1970-04-12;31555;99100;pierre-a\n"
                  "BERNARD;Pierre;1970-04-12;67482;99100;pierre-b\n"))
    assert rc == 0, err  # homonyms born elsewhere are two persons
    rc, out, err = tool(db, "import", write_csv(
        tmp_path, "DURAND,Paul,1960-10-10,69383,99100\n"
                  "\"BERNARD\",\"Pierre\",1970-04-12,67482,99100,pierre-c\n"))
    assert rc == 1
    assert "line 2: this person (names, birth date and place) is already registered: " \
           "account pierre-b" in err
    assert db.cli("ZCARD", "t:acct:ville-a:created") == "2"


# ---------------------------------------------------------------- encryption at rest

def redis_dump(db):
    """What a dump of Redis shows: every key and value (--scan, then GET,
    HGETALL, SMEMBERS or ZRANGE)."""
    parts = []
    for key in db.cli("--scan").split():
        parts.append(key)
        kind = db.cli("TYPE", key)
        cmd = {"string": ["GET"], "hash": ["HGETALL"], "set": ["SMEMBERS"],
               "zset": ["ZRANGE", None, "0", "-1", "WITHSCORES"]}[kind]
        argv = [cmd[0], key] + cmd[2:]
        parts.append(db.cli(*argv))
    return "\n".join(parts)


def test_redis_dump_holds_no_name_birth_data_or_sub(db, tmp_path):
    csv = ("MARTIN,Marie Claire Odile,1962-08-24,75107,99100,acct-1,quartier=Centre\n"
           "\"D'ALMEIDA LEVEQUE\",\"JEAN BAPTISTE\",1979-03-02,33063,99100,acct-2\n"
           "BENALI,Karim Yanis,1985-11-30,,99352,acct-3\n")
    assert tool(db, "import", write_csv(tmp_path, csv))[0] == 0
    assert sign_in(db, "marie")["account_id"] == "acct-1"
    assert sign_in(db, "jean")["account_id"] == "acct-2"
    created = sign_in(db, "paola", match="sub", policy="create")["account_id"]
    dump = redis_dump(db)
    for word in ["MARTIN", "Marie", "Claire", "Odile", "ALMEIDA", "LEVEQUE", "BAPTISTE", "Jean",
                 "BENALI", "Karim", "Yanis", "SANTUCCI", "Paola", "Centre", "quartier",
                 "1962", "1979", "1985", "1990", "75107", "33063", "2A004", "99100", "99352",
                 "a1b2v1", "c3d4v1", "p7p7v1"]:
        assert not re.search(r"(?<![A-Za-z0-9])%s(?![A-Za-z0-9])" % re.escape(word), dump,
                             re.I), (word, dump)
    # while lookups work: by sub, by pivot, and the tool reads it all back
    assert sign_in(db, "marie", match="sub")["account_id"] == "acct-1"
    assert sign_in(db, "karim")["account_id"] == "acct-3"
    assert sign_in(db, "paola", match="sub", policy="deny")["account_id"] == created
    assert tool(db, "find-sub", "fc", "c3d4v1")[1] == "acct-2\n"
    rc, out, err = tool(db, "show", "acct-2")
    assert "family_name: D'ALMEIDA LEVEQUE" in out.splitlines() and "  fc:c3d4v1" in out, out


# ---------------------------------------------------------------- list, search, export, purge

def test_list_search_export_purge(db, tmp_path):
    assert tool(db, "import", write_csv(tmp_path, CSV))[0] == 0
    assert sign_in(db, "marie")["account_id"] == "marie-001"
    assert sign_in(db, "jean")["account_id"] == "jean-002"
    fake_sessions(db, "marie-001", ["aa11", "bb22"])
    fake_sessions(db, "jean-002", ["cc33"])

    rc, out, err = tool(db, "list", "--per-page", "3")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "# tenant ville-a: 4 accounts, by last sign-in, page 1 of 2, 3 per page"
    assert lines[1] == "account\torigin\tcreated\tlast_signin\tlinks\tsessions"
    rows = [l.split("\t") for l in lines[2:]]
    assert len(rows) == 3
    assert {rows[0][0], rows[1][0]} == {"marie-001", "jean-002"}  # signed in first
    assert rows[2][3] == "never"
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r[2]) for r in rows)
    marie = [r for r in rows if r[0] == "marie-001"][0]
    assert marie[1:2] == ["import"] and marie[4:] == ["1", "2"]
    rc, out, err = tool(db, "list", "--per-page", "3", "--page", "2", "--by", "created")
    assert len(out.splitlines()) == 3

    rc, out, err = tool(db, "search", "--name", "Jean-Baptiste d'Almeida-Lévêque")
    assert rc == 0 and "\njean-002\tD'ALMEIDA LEVEQUE\tJEAN BAPTISTE\t1979-03-02\t" in out, out
    rc, out, err = tool(db, "search", "--birthdate", "1990-01-09")
    assert rc == 0 and len(out.splitlines()) == 3 and "\tSantucci\tPaola Maria\t" in out
    rc, out, err = tool(db, "search", "--name", "nobody")
    assert rc == 3

    rc, out, err = tool(db, "export", "marie-001")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["account"]["personal_data"] == {
        "family_name": "MARTIN", "given_name": "Marie Claire Odile", "birthdate": "1962-08-24",
        "birthplace": "75107", "birthcountry": "99100"}
    assert doc["account"]["attributes"] == {"quartier": "Centre", "abonne": "oui"}
    assert doc["links"] == [{"provider": "fc", "sub": "a1b2v1"}]
    assert len(doc["sessions"]) == 2  # sealed with the citizens' cookies: their end only
    assert all(set(s) == {"ends_at_the_latest"} for s in doc["sessions"])
    assert "jean" not in out.lower() and "aa11" not in out and "c3d4v1" not in out
    journal = tmp_path / "audit.log"
    journal.write_text('{"event":"signin","tenant":"ville-a","account":"marie-001",'
                       '"time":"2026-01-02T09:00:00Z"}\n'
                       '{"event":"signin","tenant":"ville-a","account":"jean-002",'
                       '"time":"2026-01-02T09:01:00Z"}\n')
    rc, out, err = tool(db, "export", "--audit-log", str(journal), "marie-001")
    assert [e["account"] for e in json.loads(out)["audit_events"]] == ["marie-001"]

    # retention: marie signed in long ago, karim was imported long ago and
    # never signed in; jean and paola stay
    old = str(int(time.time()) - 400 * 86400)
    ids = {k.split(":")[-1] for k in db.keys("t:acct:ville-a:id:*")}
    karim = [i for i in ids if i not in ("marie-001", "jean-002")
             and "BENALI" in tool(db, "show", i)[1]][0]
    db.cli("ZADD", "t:acct:ville-a:signin", old, "marie-001")
    db.cli("ZADD", "t:acct:ville-a:created", old, karim)
    rc, out, err = tool(db, "purge", "--inactive-since", "1y", "--dry-run")
    assert rc == 0 and "would erase marie-001" in out and ("would erase %s" % karim) in out
    assert len(db.keys("t:acct:ville-a:id:*")) == 4
    rc, out, err = tool(db, "purge", "--inactive-since", "1y")
    assert rc == 0, err
    assert "erased marie-001 (created " in out and "), 2 sessions revoked" in out
    assert ("erased %s (" % karim) in out
    assert "purged 2 accounts of tenant ville-a with no sign-in since " in out
    left = {k.split(":")[-1] for k in db.keys("t:acct:ville-a:id:*")}
    assert left == ids - {"marie-001", karim}
    assert not any("marie-001" in k for k in db.keys())
    assert db.keys("t:s:*") == ["t:s:cc33"]
    assert sign_in(db, "marie", match="sub")["status"] == "none"
    assert sign_in(db, "jean", match="sub")["account_id"] == "jean-002"
