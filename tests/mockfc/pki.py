#!/usr/bin/python3
"""Test PKI: a private CA and server certificates signed by it, for loopback tests only.

Contracts:
- ensure_ca(directory) -> (ca_cert_path, ca_key_path): creates DIR/ca.pem and DIR/ca.key (EC P-256,
  valid 10 years) when absent, else reuses them.
- issue_cert(directory, name, hosts) -> (cert_path, key_path): DIR/<name>.pem and DIR/<name>.key,
  a server certificate (EC P-256, serverAuth, valid 1 year) for `hosts` (IP literals become IP SANs,
  other names DNS SANs), signed by the CA of ensure_ca. An existing certificate is reused only if it
  was signed by the current CA, is valid for at least one more day and covers every host.
- Concurrent callers on one directory are serialised with a lock file (DIR/.pki.lock). Private keys
  are written with mode 0600, every file atomically (temporary file then rename).

Command line: pki.py --dir DIR [--name server] [--host 127.0.0.1 ...]; prints the paths written.
"""

import argparse
import datetime
import fcntl
import ipaddress
import os
import secrets
import sys

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("127.0.0.1", "::1", "localhost")


class _Lock:
    def __init__(self, directory):
        self.path = os.path.join(directory, ".pki.lock")
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _write_atomic(path, data, mode):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def _ensure_ca_locked(directory):
    cert_path = os.path.join(directory, "ca.pem")
    key_path = os.path.join(directory, "ca.key")
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sesame tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME,
                                         "Sesame test CA %s" % secrets.token_hex(4))])
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    _write_atomic(key_path, _key_pem(key), 0o600)
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path, key_path


def ensure_ca(directory):
    os.makedirs(directory, exist_ok=True)
    with _Lock(directory):
        return _ensure_ca_locked(directory)


def _san_entries(hosts):
    entries = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return entries


def _cert_usable(cert_path, key_path, ca_cert, hosts):
    if not (os.path.exists(cert_path) and os.path.exists(key_path)):
        return False
    try:
        with open(cert_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        if cert.issuer != ca_cert.subject:
            return False
        ca_cert.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                                    ec.ECDSA(cert.signature_hash_algorithm))
        if cert.not_valid_after < _now() + datetime.timedelta(days=1):
            return False
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        present = set(san)
        return all(entry in present for entry in _san_entries(hosts))
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False


def issue_cert(directory, name="server", hosts=DEFAULT_HOSTS):
    if not name or "/" in name or name.startswith(".") or name == "ca":
        raise ValueError("bad certificate name %r" % (name,))
    os.makedirs(directory, exist_ok=True)
    with _Lock(directory):
        ca_cert_path, ca_key_path = _ensure_ca_locked(directory)
        with open(ca_cert_path, "rb") as f:
            ca_cert = x509.load_pem_x509_certificate(f.read())
        with open(ca_key_path, "rb") as f:
            ca_key = serialization.load_pem_private_key(f.read(), password=None)
        cert_path = os.path.join(directory, name + ".pem")
        key_path = os.path.join(directory, name + ".key")
        if _cert_usable(cert_path, key_path, ca_cert, hosts):
            return cert_path, key_path
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
                .issuer_name(ca_cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=365))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, key_cert_sign=False,
                                             crl_sign=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .add_extension(x509.SubjectAlternativeName(_san_entries(hosts)), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        _write_atomic(key_path, _key_pem(key), 0o600)
        _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return cert_path, key_path


def main(argv=None):
    parser = argparse.ArgumentParser(description="Create a test CA and a server certificate.")
    parser.add_argument("--dir", required=True)
    parser.add_argument("--name", default="server")
    parser.add_argument("--host", action="append", dest="hosts")
    args = parser.parse_args(argv)
    hosts = tuple(args.hosts) if args.hosts else DEFAULT_HOSTS
    ca_path, _ = ensure_ca(args.dir)
    cert_path, key_path = issue_cert(args.dir, args.name, hosts)
    print("ca=%s\ncert=%s\nkey=%s" % (ca_path, cert_path, key_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
