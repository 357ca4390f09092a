"""The installation's own certificate authority for the built-in signing provider.

Each SignBridge installation has one CA, created on first start and kept under the data
directory. It issues a short-lived end-entity certificate per signer per signature, so every
signed PDF validates offline against one published root (the CA certificate served by the
API) without any external PKI.

The CA key and certificate live together in one PEM file (mode 0600) so they can be created
atomically: a process writes a temp file and hard-links it into place, which fails if another
process won the race; the loser then loads the winner's CA. Two separate files could end up
with one process's key next to the other's certificate. `ca.crt.pem` is a public copy of the
certificate for people and tools that want just the root.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyhanko.sign.signers import SimpleSigner
from pyhanko_certvalidator.registry import SimpleCertificateStore

BUNDLE_FILE = "ca.key.pem"  # private key + certificate: the CA's single source of truth
CERT_FILE = "ca.crt.pem"  # public copy of the certificate
CA_VALIDITY = dt.timedelta(days=3652)
SIGNER_VALIDITY = dt.timedelta(days=730)
CLOCK_SKEW = dt.timedelta(minutes=5)  # backdate notBefore so slightly-off clocks still accept
# X.509's upper bound for a common name is 64 characters; `cryptography` counts UTF-8 bytes, so
# 64 bytes satisfies both readings (a 22-character Chinese name is already longer than that).
COMMON_NAME_MAX_BYTES = 64
# id-at-name (RFC 5280 X520name, bounded at 32,768 characters): carries the whole name when the
# common name had to be shortened. `asn1crypto` reads it back as the subject's "name".
FULL_NAME_OID = x509.ObjectIdentifier("2.5.4.41")


@dataclass(frozen=True)
class SignerCredential:
    """What `sign_pdf` needs: a ready pyHanko signer and the certificate it signs with."""

    signer: SimpleSigner
    certificate: asn1_x509.Certificate


def common_name(name: str) -> str:
    """`name` if it fits a common name, else its longest prefix that does, ending in "…"."""
    if len(name.encode()) <= COMMON_NAME_MAX_BYTES:
        return name
    budget = COMMON_NAME_MAX_BYTES - len("…".encode())
    cut = name.encode()[:budget].decode(errors="ignore")  # never split a character
    return cut.rstrip() + "…"


def subject_full_name(cert: asn1_x509.Certificate) -> str:
    """The signer's whole name from a certificate `InstallationCA.issue` made: id-at-name, else CN."""
    subject = cert.subject.native
    name = subject.get("name") or subject.get("common_name") or ""
    return name if isinstance(name, str) else str(name)


def _to_asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600 via a temp file, failing if `path` already exists."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)  # atomic and exclusive: raises FileExistsError if we lost the race
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _write_public(path: Path, data: bytes) -> None:
    """Atomically (re)write a public file; racing writers write identical content."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _certificate(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, validity: dt.timedelta,
                 *, ca: bool) -> x509.CertificateBuilder:
    """What the CA's and a signer's certificates share: a fresh serial, validity from a little
    before now (clocks disagree), the key's identifier, and the role: a CA only certifies
    (keyCertSign, cRLSign, no path below it), a signer only signs (digitalSignature and
    nonRepudiation, which PAdES validators look for)."""
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=not ca, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


class InstallationCA:
    """The installation's CA: loads it from `directory`, or creates it on first use."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self._key = key
        self._cert = cert
        self._asn1_cert = _to_asn1(cert)

    @classmethod
    def load_or_create(cls, directory: Path, organisation: str = "SignBridge") -> InstallationCA:
        """Load the CA under `directory`, creating it (once, race-safely) if it does not exist."""
        directory = Path(directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # the key file itself is 0600
        bundle = directory / BUNDLE_FILE
        if not bundle.exists():
            key, cert = cls._generate(organisation)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ) + cert.public_bytes(serialization.Encoding.PEM)
            with contextlib.suppress(FileExistsError):
                _write_private(bundle, pem)
        ca = cls._load(bundle)
        cert_pem = ca._cert.public_bytes(serialization.Encoding.PEM)
        cert_path = directory / CERT_FILE
        if not cert_path.exists() or cert_path.read_bytes() != cert_pem:
            _write_public(cert_path, cert_pem)
        return ca

    @classmethod
    def in_memory(cls, organisation: str) -> InstallationCA:
        """A CA that exists only in this process: for dry runs whose signatures nobody keeps."""
        return cls(*cls._generate(organisation))

    @classmethod
    def _load(cls, bundle: Path) -> InstallationCA:
        pem = bundle.read_bytes()
        key = serialization.load_pem_private_key(pem, password=None)
        cert = x509.load_pem_x509_certificate(pem)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{bundle}: expected an EC private key")
        if key.public_key() != cert.public_key():
            raise ValueError(f"{bundle}: the CA key does not match the CA certificate")
        return cls(key, cert)

    @staticmethod
    def _generate(organisation: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{organisation} Installation CA"),
        ])
        return key, _certificate(name, name, key, CA_VALIDITY, ca=True).sign(key, hashes.SHA256())

    @property
    def certificate(self) -> asn1_x509.Certificate:
        """The CA certificate: the single trust root for every signature this installation makes."""
        return self._asn1_cert

    def issue(self, signer_id: str, name: str, email: str | None = None) -> SignerCredential:
        """Issue a fresh key and 2-year certificate for one signer (CN=name, UID=signer_id).

        The signer id goes into the subject's UID attribute so two people with the same name
        still get distinguishable certificates. A name too long for a common name is folded:
        the CN holds its beginning and "…", the id-at-name attribute the whole name, which is
        what `subject_full_name` and signature validation report.
        """
        if not name.strip():
            raise ValueError("a signer certificate needs a non-empty name")
        key = ec.generate_private_key(ec.SECP256R1())
        builder = self._builder(name, key, [x509.NameAttribute(NameOID.USER_ID, signer_id),
                                            *self._cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)])
        if email:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False
            )
        return self._credential(key, builder)

    def issue_organisation(self, name: str, credit_code: str) -> SignerCredential:
        """Issue a fresh key and certificate for an organisation's seal: O = CN = the organisation's
        name, serialNumber = its unified social credit code — what identifies a company in China,
        and what a validator shows for a seal signature."""
        if not name.strip() or not credit_code.strip():
            raise ValueError("an organisation certificate needs a name and a credit code")
        key = ec.generate_private_key(ec.SECP256R1())
        return self._credential(key, self._builder(name, key, [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, common_name(name)),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, credit_code)]))

    def _builder(self, name: str, key: ec.EllipticCurvePrivateKey,
                 more: list[x509.NameAttribute]) -> x509.CertificateBuilder:
        """An end-entity certificate for `name` (CN, plus id-at-name when the CN had to be folded)
        and the subject attributes `more`, issued by this CA."""
        cn = common_name(name)
        subject = x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            *([x509.NameAttribute(FULL_NAME_OID, name)] if cn != name else []),
            *more,
        ])
        ca_ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return _certificate(subject, self._cert.subject, key, SIGNER_VALIDITY, ca=False).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)

    def _credential(self, key: ec.EllipticCurvePrivateKey, builder: x509.CertificateBuilder) -> SignerCredential:
        cert = _to_asn1(builder.sign(self._key, hashes.SHA256()))
        key_info = asn1_keys.PrivateKeyInfo.load(
            key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        signer = SimpleSigner(
            signing_cert=cert,
            signing_key=key_info,
            cert_registry=SimpleCertificateStore.from_certs([self._asn1_cert]),
        )
        return SignerCredential(signer=signer, certificate=cert)
