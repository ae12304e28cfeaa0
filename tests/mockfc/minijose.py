"""Minimal JOSE helpers (JWK, JWS, JWE compact) for the mock FranceConnect and the tests.

Built directly on python3-cryptography; no other dependency. Contracts:

- b64u_encode(bytes) -> str, b64u_decode(str) -> bytes: base64url without padding; decoding is
  strict (padding or characters outside the alphabet raise JoseError).
- generate_key("EC"|"RSA", crv="P-256", size=2048) -> private key object.
- public_jwk(key, kid=None, alg=None, use=None) / private_jwk(...) -> dict (a JWK).
- key_from_jwk(jwk) -> cryptography key (private when the JWK has "d", else public).
- public_pem(key) -> bytes: SubjectPublicKeyInfo PEM of a (public or private) key.
- jws_sign(payload, key, alg, kid=None, header=None) -> compact JWS. payload: dict (JSON-encoded)
  or bytes. alg: ES256/ES384/ES512, RS256/RS384/RS512, PS256/PS384/PS512, HS256/HS384/HS512 (key is
  the secret bytes), "none" (key ignored, empty signature).
- jws_split(token) -> (header dict, payload bytes, signature bytes, signing input bytes); no check.
- jws_verify(token, keys, algs) -> (header, payload bytes). keys: list of (kid or None, key);
  algs: accepted "alg" values ("none" is never accepted). Raises JoseError on any failure.
- jwe_encrypt(plaintext, key, alg, enc="A256GCM", kid=None, cty=None) -> compact JWE.
  alg: RSA-OAEP, RSA-OAEP-256 (RSA public key) or ECDH-ES (EC public key, direct agreement).
- jwe_decrypt(token, private_key) -> (header dict, plaintext bytes). Raises JoseError.
- concat_kdf(z, keydatalen_bits, algid, apu=b"", apv=b"") -> bytes: RFC 7518 4.6.2 (SHA-256).
"""

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import struct

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (decode_dss_signature,
                                                             encode_dss_signature)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class JoseError(Exception):
    """Any malformed, unsupported or unverifiable JOSE object."""


_B64U_RE = re.compile(r"^[A-Za-z0-9_-]*$")

CURVES = {
    "P-256": (ec.SECP256R1, 32),
    "P-384": (ec.SECP384R1, 48),
    "P-521": (ec.SECP521R1, 66),
}
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}

_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_HASHLIB = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}
_EC_ALG_CURVE = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}

GCM_KEY_BYTES = {"A128GCM": 16, "A192GCM": 24, "A256GCM": 32}


def b64u_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text):
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    if not _B64U_RE.match(text) or len(text) % 4 == 1:
        raise JoseError("invalid base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise JoseError("invalid base64url") from exc


def json_bytes(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _int_b64(value, length=None):
    if length is None:
        length = max(1, (value.bit_length() + 7) // 8)
    return b64u_encode(value.to_bytes(length, "big"))


def _b64_int(text):
    return int.from_bytes(b64u_decode(text), "big")


def generate_key(kty="EC", crv="P-256", size=2048):
    if kty == "EC":
        return ec.generate_private_key(CURVES[crv][0]())
    if kty == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=size)
    raise JoseError("unsupported key type %r" % kty)


def _public(key):
    return key.public_key() if hasattr(key, "public_key") else key


def public_jwk(key, kid=None, alg=None, use=None):
    pub = _public(key)
    if isinstance(pub, ec.EllipticCurvePublicKey):
        crv = _CURVE_NAMES[pub.curve.name]
        size = CURVES[crv][1]
        nums = pub.public_numbers()
        jwk = {"kty": "EC", "crv": crv, "x": _int_b64(nums.x, size), "y": _int_b64(nums.y, size)}
    elif isinstance(pub, rsa.RSAPublicKey):
        nums = pub.public_numbers()
        jwk = {"kty": "RSA", "n": _int_b64(nums.n), "e": _int_b64(nums.e)}
    else:
        raise JoseError("unsupported key")
    if kid is not None:
        jwk["kid"] = kid
    if alg is not None:
        jwk["alg"] = alg
    if use is not None:
        jwk["use"] = use
    return jwk


def private_jwk(key, kid=None, alg=None, use=None):
    jwk = public_jwk(key, kid, alg, use)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        jwk["d"] = _int_b64(key.private_numbers().private_value, CURVES[jwk["crv"]][1])
    elif isinstance(key, rsa.RSAPrivateKey):
        nums = key.private_numbers()
        jwk.update({"d": _int_b64(nums.d), "p": _int_b64(nums.p), "q": _int_b64(nums.q),
                    "dp": _int_b64(nums.dmp1), "dq": _int_b64(nums.dmq1),
                    "qi": _int_b64(nums.iqmp)})
    else:
        raise JoseError("not a private key")
    return jwk


def key_from_jwk(jwk):
    if not isinstance(jwk, dict):
        raise JoseError("JWK is not an object")
    kty = jwk.get("kty")
    try:
        if kty == "EC":
            crv = jwk.get("crv")
            if crv not in CURVES:
                raise JoseError("unsupported curve %r" % crv)
            pub = ec.EllipticCurvePublicNumbers(_b64_int(jwk["x"]), _b64_int(jwk["y"]),
                                                CURVES[crv][0]())
            if "d" in jwk:
                return ec.EllipticCurvePrivateNumbers(_b64_int(jwk["d"]), pub).private_key()
            return pub.public_key()
        if kty == "RSA":
            pub = rsa.RSAPublicNumbers(_b64_int(jwk["e"]), _b64_int(jwk["n"]))
            if "d" in jwk:
                d = _b64_int(jwk["d"])
                if "p" in jwk:
                    p, q = _b64_int(jwk["p"]), _b64_int(jwk["q"])
                else:
                    p, q = rsa.rsa_recover_prime_factors(pub.n, pub.e, d)
                return rsa.RSAPrivateNumbers(p, q, d, rsa.rsa_crt_dmp1(d, p),
                                             rsa.rsa_crt_dmq1(d, q),
                                             rsa.rsa_crt_iqmp(p, q), pub).private_key()
            return pub.public_key()
    except (KeyError, TypeError, ValueError) as exc:
        raise JoseError("invalid %s JWK: %s" % (kty, exc)) from exc
    raise JoseError("unsupported kty %r" % kty)


def public_pem(key):
    return _public(key).public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo)


# ---------------------------------------------------------------- JWS

def _sign_raw(alg, key, data):
    if alg == "none":
        return b""
    family, bits = alg[:2], alg[2:]
    if bits not in _HASHES:
        raise JoseError("unsupported alg %r" % alg)
    if family == "HS":
        if not isinstance(key, (bytes, bytearray)):
            raise JoseError("HS algorithms take a bytes secret")
        return hmac.new(bytes(key), data, _HASHLIB[bits]).digest()
    if family == "ES":
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise JoseError("ES algorithms take an EC private key")
        size = CURVES[_EC_ALG_CURVE[alg]][1]
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(_HASHES[bits]())))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if family in ("RS", "PS"):
        if not isinstance(key, rsa.RSAPrivateKey):
            raise JoseError("RS/PS algorithms take an RSA private key")
        if family == "RS":
            pad = padding.PKCS1v15()
        else:
            pad = padding.PSS(mgf=padding.MGF1(_HASHES[bits]()),
                              salt_length=_HASHES[bits].digest_size)
        return key.sign(data, pad, _HASHES[bits]())
    raise JoseError("unsupported alg %r" % alg)


def jws_sign(payload, key, alg, kid=None, header=None):
    hdr = {"alg": alg}
    if kid is not None:
        hdr["kid"] = kid
    if header:
        hdr.update(header)
    body = payload if isinstance(payload, bytes) else json_bytes(payload)
    signing_input = (b64u_encode(json_bytes(hdr)) + "." + b64u_encode(body)).encode("ascii")
    return signing_input.decode("ascii") + "." + b64u_encode(_sign_raw(alg, key, signing_input))


def jws_split(token):
    if not isinstance(token, str):
        raise JoseError("token is not text")
    parts = token.split(".")
    if len(parts) != 3:
        raise JoseError("a JWS compact serialization has 3 parts")
    try:
        header = json.loads(b64u_decode(parts[0]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise JoseError("invalid JWS header") from exc
    if not isinstance(header, dict):
        raise JoseError("JWS header is not an object")
    return (header, b64u_decode(parts[1]), b64u_decode(parts[2]),
            (parts[0] + "." + parts[1]).encode("ascii"))


def _verify_raw(alg, key, data, sig):
    family, bits = alg[:2], alg[2:]
    if bits not in _HASHES:
        return False
    try:
        if family == "HS":
            if not isinstance(key, (bytes, bytearray)):
                return False
            return hmac.compare_digest(hmac.new(bytes(key), data, _HASHLIB[bits]).digest(), sig)
        if family == "ES":
            pub = _public(key)
            if not isinstance(pub, ec.EllipticCurvePublicKey):
                return False
            crv = _EC_ALG_CURVE[alg]
            if _CURVE_NAMES.get(pub.curve.name) != crv:
                return False
            size = CURVES[crv][1]
            if len(sig) != 2 * size:
                return False
            der = encode_dss_signature(int.from_bytes(sig[:size], "big"),
                                       int.from_bytes(sig[size:], "big"))
            pub.verify(der, data, ec.ECDSA(_HASHES[bits]()))
            return True
        if family in ("RS", "PS"):
            pub = _public(key)
            if not isinstance(pub, rsa.RSAPublicKey):
                return False
            if family == "RS":
                pad = padding.PKCS1v15()
            else:
                pad = padding.PSS(mgf=padding.MGF1(_HASHES[bits]()),
                                  salt_length=_HASHES[bits].digest_size)
            pub.verify(sig, data, pad, _HASHES[bits]())
            return True
    except (InvalidSignature, ValueError):
        return False
    return False


def jws_verify(token, keys, algs):
    header, payload, sig, signing_input = jws_split(token)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg == "none" or alg not in algs:
        raise JoseError("algorithm %r not accepted" % (alg,))
    kid = header.get("kid")
    candidates = [k for (k_kid, k) in keys if kid is None or k_kid is None or k_kid == kid]
    for key in candidates:
        if _verify_raw(alg, key, signing_input, sig):
            return header, payload
    raise JoseError("signature verification failed")


# ---------------------------------------------------------------- JWE

def concat_kdf(z, keydatalen_bits, algid, apu=b"", apv=b""):
    def lenpref(data):
        return struct.pack(">I", len(data)) + data
    other = (lenpref(algid) + lenpref(apu) + lenpref(apv)
             + struct.pack(">I", keydatalen_bits))
    out = b""
    counter = 1
    while len(out) * 8 < keydatalen_bits:
        out += hashlib.sha256(struct.pack(">I", counter) + z + other).digest()
        counter += 1
    return out[: keydatalen_bits // 8]


def _oaep(alg):
    if alg == "RSA-OAEP":
        return padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    if alg == "RSA-OAEP-256":
        return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                            label=None)
    raise JoseError("unsupported key management alg %r" % alg)


def jwe_encrypt(plaintext, key, alg, enc="A256GCM", kid=None, cty=None):
    if enc not in GCM_KEY_BYTES:
        raise JoseError("unsupported enc %r" % enc)
    pub = _public(key)
    header = {"alg": alg, "enc": enc}
    if kid is not None:
        header["kid"] = kid
    if cty is not None:
        header["cty"] = cty
    if alg in ("RSA-OAEP", "RSA-OAEP-256"):
        if not isinstance(pub, rsa.RSAPublicKey):
            raise JoseError("%s needs an RSA key" % alg)
        cek = os.urandom(GCM_KEY_BYTES[enc])
        encrypted_key = pub.encrypt(cek, _oaep(alg))
    elif alg == "ECDH-ES":
        if not isinstance(pub, ec.EllipticCurvePublicKey):
            raise JoseError("ECDH-ES needs an EC key")
        eph = ec.generate_private_key(type(pub.curve)())
        header["epk"] = public_jwk(eph)
        z = eph.exchange(ec.ECDH(), pub)
        cek = concat_kdf(z, GCM_KEY_BYTES[enc] * 8, enc.encode("ascii"))
        encrypted_key = b""
    else:
        raise JoseError("unsupported key management alg %r" % alg)
    protected = b64u_encode(json_bytes(header))
    iv = os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
    return ".".join([protected, b64u_encode(encrypted_key), b64u_encode(iv),
                     b64u_encode(sealed[:-16]), b64u_encode(sealed[-16:])])


def jwe_decrypt(token, private_key):
    if not isinstance(token, str):
        raise JoseError("token is not text")
    parts = token.split(".")
    if len(parts) != 5:
        raise JoseError("a JWE compact serialization has 5 parts")
    try:
        header = json.loads(b64u_decode(parts[0]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise JoseError("invalid JWE header") from exc
    if not isinstance(header, dict):
        raise JoseError("JWE header is not an object")
    alg, enc = header.get("alg"), header.get("enc")
    if enc not in GCM_KEY_BYTES:
        raise JoseError("unsupported enc %r" % (enc,))
    encrypted_key, iv, ciphertext, tag = (b64u_decode(p) for p in parts[1:])
    try:
        if alg in ("RSA-OAEP", "RSA-OAEP-256"):
            if not isinstance(private_key, rsa.RSAPrivateKey):
                raise JoseError("%s needs an RSA private key" % alg)
            cek = private_key.decrypt(encrypted_key, _oaep(alg))
        elif alg == "ECDH-ES":
            if not isinstance(private_key, ec.EllipticCurvePrivateKey):
                raise JoseError("ECDH-ES needs an EC private key")
            if encrypted_key:
                raise JoseError("ECDH-ES direct agreement has an empty encrypted key")
            epk = key_from_jwk(header.get("epk"))
            if not isinstance(epk, ec.EllipticCurvePublicKey) or \
                    epk.curve.name != private_key.curve.name:
                raise JoseError("epk is not a public key on the recipient's curve")
            z = private_key.exchange(ec.ECDH(), epk)
            apu = b64u_decode(header["apu"]) if "apu" in header else b""
            apv = b64u_decode(header["apv"]) if "apv" in header else b""
            cek = concat_kdf(z, GCM_KEY_BYTES[enc] * 8, enc.encode("ascii"), apu, apv)
        else:
            raise JoseError("unsupported key management alg %r" % (alg,))
        if len(cek) != GCM_KEY_BYTES[enc] or len(iv) != 12 or len(tag) != 16:
            raise JoseError("bad key, IV or tag length")
        plaintext = AESGCM(cek).decrypt(iv, ciphertext + tag, parts[0].encode("ascii"))
    except (ValueError, InvalidTag) as exc:
        raise JoseError("JWE decryption failed") from exc
    return header, plaintext
