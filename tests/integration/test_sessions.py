"""Citizen sessions with real processes: expiry (inactivity and absolute),
logout and admin revocation across two instances with the in-process cache
on, Redis paused / killed / restarted, Sentinel failover, hostile cookies.

Every process runs on 127.0.0.1 (see sessions_env.py)."""

import json
import os
import subprocess
import time
import urllib.parse

import pytest

from sessions_env import (HOST, XHR, Base, Client, DurableRedis, Gateway, Redis,
                          SentinelSet, get, index_key, logout, raw_get, redis_cli, redis_section,
                          session_key, sub_of, tool_binary, wait_until)
from signin_env import echoed


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    b = Base(str(tmp_path_factory.mktemp("sessions")), nports=7)
    yield b
    b.stop()


@pytest.fixture(scope="module")
def pair(base):
    """Two instances, one Redis, cache_ttl = 5s: what makes logout and
    revocation immediate on the other instance is the pub/sub invalidation,
    not the absence of a cache."""
    redis = Redis(base.tmp)
    text = redis_section(address="127.0.0.1:%d" % redis.port)
    a = Gateway(base, "a", text, "cache_ttl = 5s")
    b = Gateway(base, "b", text, "cache_ttl = 5s")
    yield redis, a, b
    for p in (a, b, redis):
        p.stop()


def family_name(reply):
    assert reply.status == 200, reply
    return urllib.parse.unquote(echoed(reply.body)["h"]["x-sesame-family-name"][0])


def assert_signed_out(reply):
    """A browser navigation without a usable session: 302 to the sign-in
    page of the tenant, never to the provider or elsewhere."""
    assert reply.status == 302, reply
    loc = reply.header("Location")
    assert loc.startswith("http://%s:" % HOST) and "/sesame/signin?" in loc, loc


def tool(gw, *args):
    out = subprocess.run([tool_binary(), "-c", gw.conf_path] + list(args), capture_output=True,
                         timeout=30)
    return out.returncode, out.stdout.decode(), out.stderr.decode()


# ---------------------------------------------------------------- 1. expiry

def test_inactivity_and_absolute_expiry(base):
    redis = Redis(base.tmp)
    gw = Gateway(base, "expiry", redis_section(address="127.0.0.1:%d" % redis.port),
                 "inactivity_timeout = 2s\ntouch_interval = 1s\nmax_lifetime = 4s\n"
                 "cache_ttl = 1s")
    try:
        _, busy = gw.sign_in("marie")
        t_busy = time.monotonic()  # created at or just before this
        _, idle = gw.sign_in("lucie")
        t_idle = time.monotonic()
        kb, ki = session_key(busy), session_key(idle)
        # the Redis TTLs follow the limits from the start
        for k in (kb, ki):
            assert 0 < int(redis_cli(redis.port, "PTTL", k)) <= 2000
        for login in ("marie", "lucie"):
            assert 2000 < int(redis_cli(redis.port, "PTTL", index_key(sub_of(login)))) <= 4000
        # the idle session is valid now (and this use is too early to move
        # its last-seen time: touch_interval is 1s)
        assert family_name(get(gw.port, "/demarches", idle)) == "MOREAU"

        idle_checked = False
        busy_uses_late = 0
        while time.monotonic() < t_busy + 3.3:
            r = get(gw.port, "/demarches", busy)
            assert family_name(r) == "MARTIN", "a session in regular use must live on"
            if time.monotonic() > t_busy + 2.3:
                busy_uses_late += 1
            if not idle_checked and time.monotonic() > t_idle + 2.3:
                # Redis dropped the idle session by itself (TTL), before any
                # request asked for it; then the gateway refuses its cookie
                assert redis_cli(redis.port, "EXISTS", ki) == "0"
                r = get(gw.port, "/demarches", idle)
                assert_signed_out(r)
                assert any(c.startswith("sesame=;") and "Max-Age=0" in c
                           for c in r.header_all("Set-Cookie"))
                idle_checked = True
            time.sleep(min(0.3, max(0.0, t_busy + 3.3 - time.monotonic())))
        assert idle_checked and busy_uses_late >= 2
        # past the inactivity timeout, the busy session's TTL is bounded by
        # its absolute end (about 0.7s left), not by the inactivity timeout
        assert 0 < int(redis_cli(redis.port, "PTTL", kb)) <= 900

        time.sleep(max(0.0, t_idle + 4.3 - time.monotonic()))
        # max_lifetime reached: gone from Redis (TTL), refused by the gateway
        assert redis_cli(redis.port, "EXISTS", kb) == "0"
        for login in ("marie", "lucie"):
            assert redis_cli(redis.port, "EXISTS", index_key(sub_of(login))) == "0"
        assert_signed_out(get(gw.port, "/demarches", busy))
        assert gw.alive()
    finally:
        gw.stop()
        redis.stop()


# ---------------------------------------------------------------- 2. logout

def test_cache_is_on(pair):
    """Control for the next tests: instance B serves a session from its
    cache after its key was deleted behind its back (no PUBLISH), so only
    the invalidation message can make a revocation immediate there."""
    redis, a, b = pair
    _, cookie = a.sign_in("alex")
    cb = Client(b.port, cookie)
    assert family_name(cb.get("/demarches")) == "ROUSSEL"
    assert redis_cli(redis.port, "DEL", session_key(cookie)) == "1"
    assert family_name(cb.get("/demarches")) == "ROUSSEL"
    assert cb.reopened == 0  # one connection, hence one worker and its cache
    cb.close()


def test_logout_on_a_is_immediate_on_b(pair):
    redis, a, b = pair
    browser, cookie = a.sign_in("marie")
    other_browser, other = a.sign_in("lucie")
    ca, cb, cother = Client(a.port, cookie), Client(b.port, cookie), Client(b.port, other)
    # both instances accept the cookie and now hold the session in cache
    for c in (ca, cb, ca, cb):
        assert family_name(c.get("/demarches")) == "MARTIN"
    assert family_name(cother.get("/demarches")) == "MOREAU"

    r = logout(browser, a.port)
    assert r.status == 302
    assert any(c.startswith("sesame=;") and "Max-Age=0" in c for c in r.header_all("Set-Cookie"))
    # at once, on the same connections (same workers, same caches)
    assert_signed_out(cb.get("/demarches"))
    assert_signed_out(ca.get("/demarches"))
    assert cb.reopened == 0 and ca.reopened == 0
    # and on any worker of either instance
    for port in (a.port, b.port, a.port, b.port):
        assert_signed_out(get(port, "/demarches", cookie))
        assert get(port, "/sesame/me", cookie, headers=XHR).status == 401
    assert redis_cli(redis.port, "EXISTS", session_key(cookie)) == "0"
    assert redis_cli(redis.port, "SISMEMBER", index_key(sub_of("marie")),
                     session_key(cookie).rsplit(":", 1)[1]) == "0"
    # another citizen is not signed out
    assert family_name(cother.get("/demarches")) == "MOREAU"
    for c in (ca, cb, cother):
        c.close()


# ---------------------------------------------------------------- 3. revocation

def test_admin_revocation_on_both_instances(pair):
    redis, a, b = pair
    _, p1 = a.sign_in("paola")
    _, p2 = b.sign_in("paola")  # a second session, made by the other instance
    _, k = a.sign_in("karim")
    paola_sub = sub_of("paola")
    assert redis_cli(redis.port, "SCARD", index_key(paola_sub)) == "2"
    clients = {(cookie, gw.port): Client(gw.port, cookie) for cookie in (p1, p2, k)
               for gw in (a, b)}
    for (cookie, _), c in clients.items():
        assert family_name(c.get("/demarches")) == ("BENALI" if cookie == k else "SANTUCCI")

    # two tenants in the configuration: the tool wants to be told which
    rc, _, err = tool(a, "revoke", paola_sub)
    assert rc == 1 and "--tenant" in err
    assert redis_cli(redis.port, "SCARD", index_key(paola_sub)) == "2"
    rc, out, err = tool(a, "--tenant", "ville-a", "revoke", paola_sub)
    assert rc == 0, err
    assert "2 sessions revoked" in out
    for (cookie, _), c in clients.items():
        r = c.get("/demarches")
        if cookie == k:
            assert family_name(r) == "BENALI"
        else:
            assert_signed_out(r)
        assert c.reopened == 0
    for cookie in (p1, p2):
        assert redis_cli(redis.port, "EXISTS", session_key(cookie)) == "0"
    assert redis_cli(redis.port, "EXISTS", index_key(paola_sub)) == "0"
    assert redis_cli(redis.port, "EXISTS", session_key(k)) == "1"
    # idempotent; the citizen can sign in again
    rc, out, _ = tool(a, "-t", "ville-a", "revoke", paola_sub)
    assert rc == 0 and "0 sessions revoked" in out
    _, p3 = b.sign_in("paola")
    assert family_name(get(a.port, "/demarches", p3)) == "SANTUCCI"
    # usage errors change nothing
    assert tool(a, "revoke")[0] == 2
    assert tool(a, "-t", "ville-a", "revoke", "bad id!")[0] == 1
    assert tool(a, "--tenant", "ville-b", "revoke", paola_sub)[0] == 0
    assert family_name(get(b.port, "/demarches", p3)) == "SANTUCCI"
    for c in clients.values():
        c.close()


# ---------------------------------------------------------------- 6. cookies

def test_hostile_cookies_are_ignored(pair):
    _, a, _ = pair
    _, good = a.sign_in("theo")
    port = a.port

    def status(*cookie_lines):
        st, raw = raw_get(port, "/demarches", [b"Cookie: " + c for c in cookie_lines])
        return st, raw

    def signed_out(*cookie_lines):
        st, raw = status(*cookie_lines)
        assert st == 302, (st, raw[:300])
        assert b"/sesame/signin?" in raw.split(b"\r\n\r\n", 1)[0]

    g = good.encode()
    other = b"Q" * 42 + b"A"  # well-formed, unknown
    assert status(b"sesame=" + g)[0] == 200
    # 200 cookies: none is the session; the session beyond the pairs examined
    junk = [b"c%d=v%d" % (i, i) for i in range(200)]
    signed_out(b"; ".join(junk))
    signed_out(b"; ".join(junk[:150] + [b"sesame=" + g] + junk[150:]))
    # a 7 KB header: an oversized value; the session past the bytes examined
    signed_out(b"sesame=" + b"A" * 7000)
    signed_out(b"big=" + b"x" * 7000 + b"; sesame=" + b"A" * 100)
    signed_out(b"big=" + b"x" * 9000 + b"; sesame=" + g)
    # the session cookie twice with two values, in one header or two
    signed_out(b"sesame=" + g + b"; sesame=" + other)
    signed_out(b"sesame=" + other + b"; sesame=" + g)
    signed_out(b"sesame=" + g, b"sesame=" + other)
    # malformed values
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    noncanonical = good[:-1] + last[last.index(good[-1]) | 1]  # same bytes, padding bits set
    for bad in [b"", b"x", g[:-1], g + b"A", g[:-1] + b"+", g[:-1] + b"=", g[:20] + b"." + g[21:],
                b'"' + g + b'"', b" " + g[:-1], noncanonical.encode(), g + b"\x00",
                b"\xff" * 43, g[:-1] + b"\xc3\xa9"]:
        st, raw = status(b"sesame=" + bad)
        assert st in (302, 400), (bad, st, raw[:200])
        if st == 302:
            assert b"/sesame/signin?" in raw
    signed_out(b"sesame")
    signed_out(b";;;=;=;sesame;sesame==" + g)
    # the session is intact, the daemon alive, the same cookie twice is fine
    assert a.alive()
    assert status(b"sesame=" + g)[0] == 200
    assert status(b"sesame=" + g + b"; sesame=" + g)[0] == 200
    assert status(b"a=b; sesame=" + g + b"; c=d")[0] == 200


# ---------------------------------------------------------------- 4. Redis down

def test_redis_down_then_back(base):
    redis = DurableRedis(base.tmp)
    # cache off: the first signed-in request after the stop must ask Redis
    gw = Gateway(base, "down", redis_section(address="127.0.0.1:%d" % redis.port,
                                             command_timeout="500ms", connect_timeout="500ms"),
                 "cache_ttl = 0")
    try:
        _, cookie = gw.sign_in("karim")
        c = Client(gw.port, cookie)
        assert family_name(c.get("/demarches")) == "BENALI"

        redis.pause()  # unreachable: connections hang, nothing answers
        for _ in range(3):
            r = get(gw.port, "/demarches", cookie)
            assert r.status == 503, r
            assert r.elapsed < 2.0, r  # command_timeout is 500ms
            assert r.header("Location") is None
            assert not any(s.startswith("sesame=") for s in r.header_all("Set-Cookie"))
            text = r.text()
            assert 'lang="fr"' in text and "indisponible" in text
        r = get(gw.port, "/demarches", cookie, headers=XHR)
        assert r.status == 503 and r.elapsed < 2.0
        assert json.loads(r.body)["status"] == 503
        # public routes do not need Redis; optional ones go on anonymously
        r = get(gw.port, "/", cookie)
        assert r.status == 200 and r.elapsed < 1.0
        r = get(gw.port, "/optionnel", cookie)
        assert r.status == 200 and "x-sesame-account" not in echoed(r.body)["h"]
        # a new sign-in cannot be stored: 503, no session cookie, no redirect
        r = get(gw.port, "/sesame/login?return_to=%2Fdemarches")
        assert r.status == 503 and r.elapsed < 2.0, r
        assert r.header("Location") is None
        assert not any(s.startswith("sesame=") for s in r.header_all("Set-Cookie"))
        assert gw.alive()

        redis.resume()
        seen = []
        wait_until(lambda: seen.append(get(gw.port, "/demarches", cookie).status) or
                   seen[-1] == 200, 10, what="service back after SIGCONT")
        assert set(seen) <= {200, 503}, seen

        redis.kill()  # a real crash; the append-only file keeps the data
        r = get(gw.port, "/demarches", cookie)
        assert r.status == 503 and r.elapsed < 2.0, r
        assert gw.alive()
        before = gw.connected_to(redis.port)
        redis.start()  # same port, same directory
        seen = []
        wait_until(lambda: seen.append(get(gw.port, "/demarches", cookie).status) or
                   seen[-1] == 200, 10, what="service back after restart")
        # every worker reconnects by itself (each has its own backoff)
        wait_until(lambda: gw.connected_to(redis.port) >= before + gw.WORKERS, 10,
                   what="every worker reconnected")
        assert set(seen) <= {200, 503}, seen  # never sent to sign in again
        for _ in range(4):
            assert family_name(get(gw.port, "/demarches", cookie)) == "BENALI"
        # and new sign-ins are stored again
        _, fresh = gw.sign_in("theo")
        assert family_name(get(gw.port, "/demarches", fresh)) == "PAYET"
        c.close()
    finally:
        gw.stop()
        redis.stop()


@pytest.fixture(scope="module")
def paused(base):
    """A signed-in cookie and an instance whose Redis is paused (SIGSTOP)."""
    redis = DurableRedis(base.tmp)
    gw = Gateway(base, "paused", redis_section(address="127.0.0.1:%d" % redis.port),
                 "cache_ttl = 0")
    _, cookie = gw.sign_in("paola")
    redis.pause()
    yield gw, cookie
    gw.stop()
    redis.stop()


def test_signin_attempt_with_redis_down_sets_no_cookie(paused):
    gw, _ = paused
    r = get(gw.port, "/sesame/login?return_to=%2Fdemarches")
    assert r.status == 503 and r.header("Location") is None, r
    assert r.header_all("Set-Cookie") == []


def test_xhr_503_json_is_readable(paused):
    gw, cookie = paused
    r = get(gw.port, "/demarches", cookie, headers=XHR)
    assert r.status == 503
    assert r.header("Content-Type").startswith("application/json")
    j = json.loads(r.body)
    assert j["status"] == 503
    assert j["error"] == "Service momentanément indisponible", j["error"]


# ---------------------------------------------------------------- 5. Sentinel

def test_sentinel_failover(base):
    cluster = SentinelSet(os.path.join(base.tmp, "sentinel"))
    gw = None
    try:
        wait_until(cluster.ready, 20, step=0.2, what="sentinels discovering each other")
        gw = Gateway(base, "sentinel", redis_section(sentinels=cluster.sentinel_ports,
                                                     master_name=cluster.name))
        _, cookie = gw.sign_in("marie")
        assert family_name(get(gw.port, "/demarches", cookie)) == "MARTIN"
        master, replica = cluster.master, cluster.replica
        key = session_key(cookie)
        assert redis_cli(master[0], "EXISTS", key) == "1"
        assert redis_cli(master[0], "WAIT", 1, 2000) == "1"
        assert redis_cli(replica[0], "EXISTS", key) == "1"

        master[1].p.kill()  # kill -9
        master[1].p.wait()
        t_kill = time.monotonic()
        seen = []
        wait_until(lambda: seen.append(get(gw.port, "/demarches", cookie).status) or
                   seen[-1] == 200, 20, step=0.2, what="signed-in requests served again")
        t_back = time.monotonic()
        # 503 while there is no master, never a redirect to sign in: the
        # session was not lost
        assert set(seen) <= {200, 503} and 503 in seen, seen
        # served by the promoted replica, as the sentinels say
        assert all(cluster.master_port(p) == replica[0] for p in cluster.sentinel_ports)
        assert family_name(get(gw.port, "/demarches", cookie)) == "MARTIN"
        print("sentinel failover: signed-in requests served again %.1fs after the kill"
              % (t_back - t_kill))
        # every worker follows the failover
        wait_until(lambda: gw.connected_to(replica[0]) >= gw.WORKERS, 10,
                   what="every worker connected to the new master")
        # writes go to the new master: a new sign-in is stored there
        _, fresh = gw.sign_in("lucie")
        assert redis_cli(replica[0], "EXISTS", session_key(fresh)) == "1"
        assert family_name(get(gw.port, "/demarches", fresh)) == "MOREAU"
        # and a logout too
        browser, third = gw.sign_in("alex")
        assert logout(browser, gw.port).status == 302
        assert redis_cli(replica[0], "EXISTS", session_key(third)) == "0"
        assert gw.alive()
    finally:
        if gw is not None:
            gw.stop()
        cluster.stop()
