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
