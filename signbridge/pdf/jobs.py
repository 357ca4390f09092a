"""The PDF jobs the signing pool runs (`signbridge.pdf.pool`), and the caches they keep.

Each job is a top-level function taking and returning bytes and plain data, so it crosses a
process boundary; each runs equally in a thread (`SIGNBRIDGE_SIGNING_PROCESSES=0`). The caches
are per process, so every pool child warms its own:

- the installation CA, by its directory and the key file's mtime (a replaced CA is reloaded);
- signer certificates, least recently used first out, by CA, identity and day: a signer who
  signs three documents gets one certificate, and none is older than a day when used;
- the stamp font subset (`signbridge.pdf.pades`, already per process).
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from signbridge.pdf.pades import (
    ValidatedBase,
    Validation,
    default_font_path,
    seal_pdf,
    sign_pdf,
    validate_pdf_from,
)
from signbridge.pdf.pki import BUNDLE_FILE, InstallationCA, SignerCredential

# Signer certificates kept per process: a few hundred signers in flight per core at most.
CREDENTIAL_CACHE = 512
_CA_LOCK = threading.Lock()
_CAS: dict[tuple[str, int], InstallationCA] = {}


class SigningFailed(Exception):
    """pyHanko or the certificate refused this document or name: the caller's "unsignable".

    Carries only a message, so it pickles back from a child unchanged."""


def installation_ca(ca_dir: str) -> InstallationCA:
    """The CA under `ca_dir` (created on first use), loaded once per process and key file version."""
    return _ca_entry(ca_dir)[1]


def _ca_entry(ca_dir: str) -> tuple[tuple[str, int], InstallationCA]:
    """The CA under `ca_dir` and its cache key (directory, key file mtime)."""
    bundle = Path(ca_dir) / BUNDLE_FILE
    try:
        mtime = bundle.stat().st_mtime_ns
    except FileNotFoundError:
        mtime = 0
    with _CA_LOCK:
        ca = _CAS.get((ca_dir, mtime))
        if ca is None:
            ca = InstallationCA.load_or_create(Path(ca_dir))
            if mtime == 0:  # just created: key the cache by the file that now exists
                mtime = bundle.stat().st_mtime_ns
            _CAS.clear()  # one installation per process, in practice; never grows
            _CAS[(ca_dir, mtime)] = ca
        return (ca_dir, mtime), ca


@functools.lru_cache(maxsize=CREDENTIAL_CACHE)
def _credential(ca_key: tuple[str, int], kind: str, identity: tuple[str, ...], day: int) -> SignerCredential:
    del day  # part of the key only: a certificate is used on the day it was issued
    ca = installation_ca(ca_key[0])
    if kind == "org":
        return ca.issue_organisation(identity[0], identity[1])
    return ca.issue(identity[0], identity[1], identity[2] or None)


def credential(ca_dir: str, kind: str, *identity: str) -> SignerCredential:
    """A signer's ("person": id, name, email) or an organisation's ("org": name, credit code)
    certificate from the CA under `ca_dir`, cached per process (see the module docstring)."""
    key, _ = _ca_entry(ca_dir)  # the CA file's version keys the cache: a new CA, new certificates
    return _credential(key, kind, tuple(identity), int(time.time() // 86400))


@dataclass(frozen=True)
class SealSpec:
    """An organisation's seal to add after a person's signature."""

    org_name: str
    credit_code: str
    image: bytes | None  # the uploaded seal; None: draw the standard round seal
    kind: str = ""
    placement: tuple[int, tuple[float, float, float, float]] | None = None


@dataclass(frozen=True)
class SignJob:
    """Everything one signature (and its seal) needs, as plain data."""

    data: bytes
    ca_dir: str
    signer_id: str
    name: str
    email: str
    position: int
    signed_at: dt.datetime
    font_path: str | None = None
    placement: tuple[int, tuple[float, float, float, float]] | None = None
    seal: SealSpec | None = None
    tz: dt.tzinfo = dt.UTC
    base: ValidatedBase | None = None  # `data` as validated before: check the new signatures on top of it


@dataclass(frozen=True)
class Signed:
    """A signed version and, when it could be checked incrementally, its validation."""

    data: bytes
    validation: Validation | None


def sign_job(job: SignJob) -> Signed:
    """Sign (and seal) `job.data`; then validate the new signatures on top of `job.base`, if given.

    Raises SigningFailed for what pyHanko or the certificate refuses (the document or the name);
    anything else (the CA's disk) propagates as the system problem it is."""
    from signbridge.pdf.seal import round_seal

    font = Path(job.font_path) if job.font_path else None
    ca_dir = job.ca_dir
    installation_ca(ca_dir)
    try:
        signed = sign_pdf(job.data, credential(ca_dir, "person", job.signer_id, job.name, job.email),
                          signer_name=job.name, position=job.position, signed_at=job.signed_at,
                          font_path=font, placement=job.placement, tz=job.tz)
        if job.seal is not None:
            image = job.seal.image or round_seal(job.seal.org_name, job.seal.kind, font or default_font_path())
            signed = seal_pdf(signed, credential(ca_dir, "org", job.seal.org_name, job.seal.credit_code),
                              org_name=job.seal.org_name, seal_png=image, position=job.position,
                              signed_at=job.signed_at, placement=job.seal.placement)
    except Exception as e:  # a name or email the certificate refuses, pyHanko's many error types
        raise SigningFailed(f"{type(e).__name__}: {e}") from None
    validation = None
    if job.base is not None:
        validation = validate_pdf_from(signed, [installation_ca(ca_dir).certificate], job.base)
    return Signed(signed, validation)


def validate_job(data: bytes, ca_dir: str, base: ValidatedBase | None = None) -> Validation:
    """Validate `data` against the installation CA: only what follows `base`, if it extends it."""
    return validate_pdf_from(data, [installation_ca(ca_dir).certificate], base)


def check_job(data: bytes, max_bytes: int) -> int:
    """`signbridge.pdf.check.check_pdf` in the pool (its dry-run signature is the costly part)."""
    from signbridge.pdf.check import check_pdf

    return check_pdf(data, max_bytes)


def certificate_job(lines: list[object], ca_dir: str, title: str, footer: str, issued_at: dt.datetime,
                    font_path: str | None = None) -> bytes:
    """The certificate of completion, laid out and signed (`signbridge.pdf.certificate`)."""
    from signbridge.pdf.certificate import SIGNER_ID, SIGNER_NAME, layout_pdf
    from signbridge.pdf.pades import sign_pdf as sign

    font = Path(font_path) if font_path else None
    pdf = layout_pdf(lines, title=title, footer=footer, font_path=font)  # type: ignore[arg-type]
    return sign(pdf, credential(ca_dir, "person", SIGNER_ID, SIGNER_NAME, ""), signer_name="SignBridge",
                position=1, signed_at=issued_at, reason="签署完成证明 Certificate of completion", font_path=font)


