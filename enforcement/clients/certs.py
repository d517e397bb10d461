"""enforcement-certs: a development CA, a server certificate and client
certificates for mutual TLS between the case system, engineers and the
controller.

For tests and demos only: the CA key sits next to the certificates and
nothing is revoked. Production certificates come from the operator's own PKI;
the controller only needs the PEM files and the client CA.
"""
from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import pathlib
import re
import secrets
import sys
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: pathlib.Path, data: bytes, private: bool = False) -> None:
    # Written under a fresh name, then renamed over the path: a key is 0600
    # from its first byte (an existing file's looser mode never applies to
    # it), a symlink at the path is replaced rather than written through, and
    # a reader never sees half a file.
    mode = 0o600 if private else 0o644
    partial = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(partial, mode)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _refuse_existing(paths: list[pathlib.Path]) -> None:
    # A second run would silently replace the CA, and with it every
    # certificate issued so far: say so instead, unless asked to.
    there = [str(path) for path in paths if path.is_symlink() or path.exists()]
    if there:
        raise FileExistsError(f"{', '.join(there)} already exist(s); nothing was written "
                              "(--force replaces them)")


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _builder(subject: str, issuer: x509.Name, public_key, days: int):
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            # A little slack for clocks that disagree by a few minutes.
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days)))


def make_ca(name: str, days: int):
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (_builder(name, subject, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca_key, ca_cert, name: str, *, server: bool, days: int,
          hosts: Sequence[str] = ()):
    """A leaf certificate for a server (with its DNS names and addresses) or
    a client (its common name is the identity roles are given to)."""
    key = _key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (_builder(name, ca_cert.subject, key.public_key(), days)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                              critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=True, content_commitment=False, key_encipherment=False,
                   data_encipherment=False, key_agreement=True, key_cert_sign=False,
                   crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    if not server:
        # Some TLS stacks want a SAN on every certificate; the name doubles as one.
        names.append(x509.DNSName(name))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def generate(directory: pathlib.Path, *, clients: list[str], server_hosts: list[str],
             days: int = 30, ca_name: str = "enforcement development CA",
             force: bool = False) -> list[pathlib.Path]:
    """Writes ca.pem/ca.key, server.pem/server.key and NAME.pem/NAME.key per
    client. Returns the paths written. Refuses (FileExistsError, nothing
    written) if any of them exists, unless force."""
    for name in clients:
        if not _NAME.match(name) or name in ("ca", "server"):
            raise ValueError(f"client name {name!r}: use letters, digits, '.', '_' or '-' "
                             "(at most 64), and not 'ca' or 'server'")
    if not server_hosts:
        raise ValueError("the server certificate needs at least one host name or address")
    directory.mkdir(parents=True, exist_ok=True)
    if not force:
        _refuse_existing([directory / f"{stem}.{suffix}" for stem in ("ca", "server", *clients)
                          for suffix in ("pem", "key")])
    written = []

    def save(stem: str, key, cert) -> None:
        _write(directory / f"{stem}.key", _pem_key(key), private=True)
        _write(directory / f"{stem}.pem", cert.public_bytes(serialization.Encoding.PEM))
        written.extend([directory / f"{stem}.pem", directory / f"{stem}.key"])

    ca_key, ca_cert = make_ca(ca_name, days)
    save("ca", ca_key, ca_cert)
    save("server", *issue(ca_key, ca_cert, server_hosts[0], server=True, days=days,
                          hosts=server_hosts))
    for name in clients:
        save(name, *issue(ca_key, ca_cert, name, server=False, days=days))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="enforcement-certs",
        description="Writes a development CA, a server certificate and client "
                    "certificates for the controller's mutual TLS. Not for production.")
    parser.add_argument("directory", type=pathlib.Path)
    parser.add_argument("--client", action="append", default=None, metavar="NAME",
                        help="a client certificate with this common name (repeatable). "
                             "Default: case-system and engineer")
    parser.add_argument("--server-host", action="append", default=None, metavar="HOST",
                        help="DNS name or address clients use to reach the controller "
                             "(repeatable). Default: localhost and 127.0.0.1")
    parser.add_argument("--force", action="store_true",
                        help="replace files a previous run wrote (a new CA: certificates "
                             "issued before stop being trusted)")
    parser.add_argument("--days", type=int, default=30,
                        help="validity in days. Default: %(default)s")
    args = parser.parse_args(argv)
    if not 0 < args.days <= 3650:
        parser.error("--days must be between 1 and 3650")
    try:
        written = generate(args.directory,
                           clients=args.client or ["case-system", "engineer"],
                           server_hosts=args.server_host or ["localhost", "127.0.0.1"],
                           days=args.days, force=args.force)
    except (ValueError, OSError) as exc:
        print(f"enforcement-certs: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
