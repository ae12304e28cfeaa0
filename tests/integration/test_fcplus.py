"""FranceConnect+ through the gateway: the mock encrypts the ID token and
userinfo (JWE) to the public keys the gateway publishes at /sesame/jwks.json;
the gateway decrypts them with its private keys, then verifies them."""

import json
import os
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import signin_env  # noqa: F401  (puts tests/mockfc on sys.path)
import harness  # noqa: E402
from sesame_env import Echo, Redis, Sesame, free_port  # noqa: E402
from signin_env import Browser, echoed, sign_in  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def write_key(path, key):
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    with open(path, "wb") as f:
        f.write(pem)
    os.chmod(path, 0o600)


def conf(tmp, port, redis_port, mock_port, ca, echo_url, keys):
    with open(os.path.join(tmp, "session.key"), "w") as f:
        f.write("ZmNwbHVzLXNlc3Npb24ta2V5LWZvci10ZXN0cy0wMTIzNDU2\n")
    os.chmod(os.path.join(tmp, "session.key"), 0o600)
    with open(os.path.join(tmp, "fcp.secret"), "w") as f:
        f.write("secret-fcplus-0123456789\n")
    os.chmod(os.path.join(tmp, "fcp.secret"), 0o600)
    return """
[server]
listen = 127.0.0.1:{port}
workers = 2
error_log = {tmp}/sesame-error.log
access_log = off

[redis]
address = 127.0.0.1:{redis}

[session]
secret_file = {tmp}/session.key

[provider franceconnect-plus]
issuer = https://127.0.0.1:{mock}/api/v2
client_id = fcplus-client
client_secret_file = {tmp}/fcp.secret
ca_file = {ca}
acr_values = eidas2
scopes = openid given_name family_name birthdate
decryption_key_files = {keys}

[tenant ville-a]
hosts = ville-a.localhost
public_url = http://ville-a.localhost:{port}
provider = franceconnect-plus

[route a-demarches]
tenant = ville-a
path = /demarches
upstream = {echo}
acr = eidas2
claims = given_name family_name
""".format(port=port, tmp=tmp, redis=redis_port, mock=mock_port, ca=ca, echo=echo_url,
           keys=" ".join(keys))


@pytest.fixture(scope="module", params=["ECDH-ES", "RSA-OAEP", "RSA-OAEP-256"])
def fcplus(request, tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("fcplus"))
    alg = request.param
    procs = []
    try:
        pki = os.path.join(tmp, "pki")
        subprocess.run([harness.PYTHON, os.path.join(HERE, "..", "mockfc", "pki.py"), "--dir", pki,
                        "--name", "mockfc", "--host", "127.0.0.1", "--host", "localhost"],
                       check=True, capture_output=True)
        ec_path, rsa_path = os.path.join(tmp, "enc-ec.pem"), os.path.join(tmp, "enc-rsa.pem")
        write_key(ec_path, ec.generate_private_key(ec.SECP256R1()))
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if alg == "RSA-OAEP-256":
            # a key file may say which algorithm the key serves: a private JWK with "alg"
            rsa_path = os.path.join(tmp, "enc-rsa.jwk")
            with open(rsa_path, "w") as f:
                json.dump(harness.minijose.private_jwk(rsa_key, kid="x", alg=alg, use="enc"), f)
            os.chmod(rsa_path, 0o600)
        else:
            write_key(rsa_path, rsa_key)
        redis = Redis(tmp)
        procs.append(redis)
        echo = Echo(tmp)
        procs.append(echo)
        port, mock_port = free_port(), free_port()
        gw = Sesame(tmp, conf(tmp, port, redis.port, mock_port, os.path.join(pki, "ca.pem"), echo.url,
                              [ec_path, rsa_path]), port=port)
        procs.append(gw)
        # the gateway publishes its public encryption keys; the mock encrypts to them
        r = Browser(port).get("http://ville-a.localhost:%d/sesame/jwks.json" % port)
        assert r.status == 200
        jwks = json.loads(r.body)
        assert all("d" not in k and "p" not in k for k in jwks["keys"])
        keys = [k for k in jwks["keys"] if k.get("alg") == alg and k.get("use") == "enc"]
        assert len(keys) == 1, jwks
        client = {"client_id": "fcplus-client", "client_secret": "secret-fcplus-0123456789",
                  "redirect_uris": ["http://ville-a.localhost:%d/sesame/callback" % port],
                  "post_logout_redirect_uris": ["http://ville-a.localhost:%d/sesame/logout/callback" % port],
                  "id_token_signed_response_alg": "ES256", "encryption_alg": alg,
                  "jwks": {"keys": keys}}
        mock = harness.start_mockfc(tmp, [client], mode="fcplus", port=mock_port, pki_dir=pki)
        procs.append(mock)
        yield mock, echo, gw, port
    finally:
        for p in reversed(procs):
            p.stop()


@pytest.fixture(autouse=True)
def no_scenario(fcplus):
    fcplus[0].scenario("none")
    yield
    fcplus[0].scenario("none")


def test_encrypted_tokens_sign_in(fcplus):
    mock, echo, gw, port = fcplus
    b = Browser(port)
    r, _ = sign_in(b, mock, port, "marie")
    assert r.status == 303, r.body[:400]
    r = b.get("http://ville-a.localhost:%d/demarches" % port)
    assert r.status == 200
    h = echoed(r.body)["h"]
    assert h["x-sesame-acr"] == ["eidas2"]
    assert h["x-sesame-family-name"] == ["MARTIN"]


def test_unencrypted_token_refused_when_keys_configured(fcplus):
    mock, echo, gw, port = fcplus
    mock.scenario("fcplus_unencrypted")
    b = Browser(port)
    r, _ = sign_in(b, mock, port, "marie")
    assert r.status == 401
    assert "sesame" not in b.cookies.get("ville-a.localhost", {})


def test_acr_below_requested_refused(fcplus):
    mock, echo, gw, port = fcplus
    mock.scenario("acr_low")
    b = Browser(port)
    r, _ = sign_in(b, mock, port, "marie")
    assert r.status == 401
    assert "sesame" not in b.cookies.get("ville-a.localhost", {})
