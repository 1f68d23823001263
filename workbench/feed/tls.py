"""TLS for loopback tests and benchmarks: a throwaway CA and server certificate, and contexts.

`self_signed(directory)` writes a fresh certificate authority and a server certificate it
signed, valid for 127.0.0.1, ::1 and localhost, as PEM files; `server_context(cert, key)` is
what `SimExchange(ssl_context=...)` serves wss:// and https:// with, and `client_context(ca)`
what a client verifies it with (`WebSocketFeed(ca_file=...)`, `EndpointScouter(ca_file=...)`,
the native feed handler's CA option takes the same file):

    ca, cert, key = self_signed(tmp_path)
    with SimExchange(ssl_context=server_context(cert, key)) as ex:   # ex.url: wss://...
        feed = WebSocketFeed(ex.url + "/stream", "binance", ["BTCUSDT"], sink, ca_file=ca)

Keys are ECDSA P-256 (a cheap handshake), certificates X.509 v3 with the extensions a strict
verifier (OpenSSL's X509_V_FLAG_X509_STRICT, Python 3.13's default) asks for: basic
constraints, key usage, subject and authority key identifiers, subjectAltName, and
extendedKeyUsage serverAuth on the server certificate (RFC 5280 section 4.2). Making them
needs the `cryptography` package (the dev extra); the contexts need only `ssl`.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import os
import ssl
from pathlib import Path
from typing import NamedTuple

from workbench.errors import ConfigError

HOSTS = ("127.0.0.1", "::1", "localhost")


class TlsFiles(NamedTuple):
    """Paths (str) of the PEM files written by `self_signed`: the CA certificate (what clients
    trust), the server certificate and its private key (mode 0600)."""

    ca_file: str
    cert_file: str
    key_file: str


def self_signed(directory: str | Path, hosts: tuple[str, ...] = HOSTS,
                days: int = 2) -> TlsFiles:
    """Make a CA and a server certificate for `hosts` (IP addresses or DNS names) signed by it,
    valid from an hour ago for `days` days, in `directory` (created if missing) as ca.pem,
    server.pem and server-key.pem. Returns their paths. Raises ConfigError for no hosts or
    days < 1, ModuleNotFoundError naming the package when `cryptography` is not installed."""
    if not hosts or days < 1:
        raise ConfigError(f"expected at least one host and days >= 1, got {hosts!r}, {days!r}")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def usage(*, sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=True, content_commitment=False,
                             key_encipherment=False, data_encipherment=False,
                             key_agreement=False, key_cert_sign=sign, crl_sign=sign,
                             encipher_only=False, decipher_only=False)

    def alt_name(host: str) -> x509.GeneralName:
        try:
            return x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            return x509.DNSName(host)

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    server_key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    ca_name = name("hft-workbench test CA")

    def builder(subject: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=days)))

    ca_cert = (builder(ca_name, ca_key)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(usage(sign=True), critical=True)
               .add_extension(ca_ski, critical=False)
               .add_extension(aki, critical=False)
               .sign(ca_key, hashes.SHA256()))
    server_cert = (builder(name(hosts[0]), server_key)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(usage(sign=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                  critical=False)
                   .add_extension(x509.SubjectAlternativeName([alt_name(h) for h in hosts]),
                                  critical=False)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(
                       server_key.public_key()), critical=False)
                   .add_extension(aki, critical=False)
                   .sign(ca_key, hashes.SHA256()))

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(*(str(folder / f) for f in ("ca.pem", "server.pem", "server-key.pem")))
    Path(files.ca_file).write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    Path(files.cert_file).write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_pem = server_key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
    fd = os.open(files.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_pem)
    return files


def server_context(cert_file: str | Path, key_file: str | Path) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2 or newer) serving `cert_file` with `key_file` (PEM).
    Raises OSError / ssl.SSLError when a file is missing or the key does not match."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


@functools.cache
def client_context(ca_file: str | Path | None = None) -> ssl.SSLContext:
    """The client TLS context (made once per process and CA file): the system's trusted CAs
    (`ssl.create_default_context`) for None, else only the CA certificates in `ca_file` (PEM);
    hostnames and certificates are verified either way. Raises OSError / ssl.SSLError when the
    file is missing or holds no certificate."""
    if ca_file is None:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=str(ca_file))
