"""Row 6 — PAdES signing and validation cost by key type (EC P-256, RSA 2048, RSA 3072).

Each key's signature is timed twice in the same run: as SignBridge signs (the signature container
reserved from the certificates and the key size) and as pyHanko does by default (a dry-run
signature to size the container). Then the signing pool's throughput (`signbridge.pdf.pool`,
one process per core) against one thread of the calling process, as signatures per second.

EC credentials come from the installation CA (`signbridge.pdf.pki`, which issues EC only); the
RSA ones are made here with `cryptography` (an RSA root of the same size and a signer under
it). Baseline: the raw key operation on a SHA-256 digest (sign / verify), i.e. what the
signature itself costs without the PDF around it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from pyhanko.sign.signers import SimpleSigner
from pyhanko_certvalidator.registry import SimpleCertificateStore

from signbridge.pdf.jobs import SignJob, sign_job
from signbridge.pdf.pades import sign_pdf, validate_pdf
from signbridge.pdf.pki import InstallationCA, SignerCredential
from signbridge.pdf.pool import SigningPool, default_processes
from signbridge.pdf.sample import sample_contract


def _asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def rsa_credential(bits: int) -> tuple[SignerCredential, asn1_x509.Certificate, rsa.RSAPrivateKey]:
    now = dt.datetime.now(dt.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Bench RSA {bits} CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                              critical=True)
               .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "李四")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False),
                           critical=True)
            .sign(ca_key, hashes.SHA256()))
    key_info = asn1_keys.PrivateKeyInfo.load(key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    root = _asn1(ca_cert)
    signer = SimpleSigner(signing_cert=_asn1(cert), signing_key=key_info,
                          cert_registry=SimpleCertificateStore.from_certs([root]))
    return SignerCredential(signer=signer, certificate=_asn1(cert)), root, key


@dataclass
class SignRow:
    key_type: str
    sign_ms: float
    validate_ms: float
    raw_sign_ms: float
    raw_verify_ms: float
    iterations: int
    dry_run_sign_ms: float = math.nan  # the same signature with pyHanko's dry-run sizing
    pool_per_second: float = math.nan  # signatures/s through the pool (EC row only)
    thread_per_second: float = math.nan  # signatures/s in one thread, same jobs and concurrency
    pool_processes: int = 0
    pool_jobs: int = 0


def _time(fn: Any, n: int) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1000


def run(iterations: int, log: Any = print) -> list[SignRow]:
    pdf = sample_contract("Bench Contract", pages=2)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(pdf)
    data = digest.finalize()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        ca = InstallationCA.load_or_create(Path(d) / "ca")
        ec_cred = ca.issue("u-1", "李四")
        ec_key = ec.generate_private_key(ec.SECP256R1())
        ec_sig = ec_key.sign(data, ec.ECDSA(hashes.SHA256()))
        creds: list[tuple[str, SignerCredential, asn1_x509.Certificate, Any, Any]] = [
            ("EC P-256", ec_cred, ca.certificate,
             lambda: ec_key.sign(data, ec.ECDSA(hashes.SHA256())),
             lambda: ec_key.public_key().verify(ec_sig, data, ec.ECDSA(hashes.SHA256()))),
        ]
        for bits in (2048, 3072):
            cred, root, key = rsa_credential(bits)
            sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
            creds.append((f"RSA {bits}", cred, root,
                          lambda key=key: key.sign(data, padding.PKCS1v15(), hashes.SHA256()),
                          lambda key=key, sig=sig: key.public_key().verify(sig, data, padding.PKCS1v15(),
                                                                           hashes.SHA256())))
        now = dt.datetime.now(dt.UTC)
        sign_pdf(pdf, ec_cred, signer_name="李四", position=1, signed_at=now)  # load the CJK font once
        for name, cred, root, raw_sign, raw_verify in creds:
            signed = sign_pdf(pdf, cred, signer_name="李四", position=1, signed_at=now)
            reports = validate_pdf(signed, [root])
            if not (len(reports) == 1 and reports[0].valid and reports[0].trusted and reports[0].intact):
                raise RuntimeError(f"{name}: the bench's own signature does not validate: {reports}")
            row = SignRow(
                key_type=name,
                sign_ms=_time(lambda cred=cred: sign_pdf(pdf, cred, signer_name="李四", position=1,
                                                         signed_at=now), iterations),
                validate_ms=_time(lambda signed=signed, root=root: validate_pdf(signed, [root]), iterations),
                raw_sign_ms=_time(raw_sign, max(iterations, 50)),
                raw_verify_ms=_time(raw_verify, max(iterations, 50)),
                iterations=iterations,
                dry_run_sign_ms=_time(lambda cred=cred: sign_pdf(pdf, cred, signer_name="李四", position=1,
                                                                 signed_at=now, reserve=False), iterations),
            )
            log(f"  signing {name}: sign {row.sign_ms:.1f} ms (with a dry run {row.dry_run_sign_ms:.1f} ms), "
                f"validate {row.validate_ms:.1f} ms (raw {row.raw_sign_ms:.3f} / {row.raw_verify_ms:.3f} ms)")
            rows.append(row)
        jobs = max(8 * default_processes(), 4 * iterations)
        pool_rate, thread_rate = asyncio.run(_throughput(pdf, str(Path(d) / "ca"), jobs, now))
        rows[0].pool_per_second, rows[0].thread_per_second = pool_rate, thread_rate
        rows[0].pool_processes, rows[0].pool_jobs = default_processes(), jobs
        log(f"  signing pool: {pool_rate:.1f} signatures/s on {default_processes()} processes, "
            f"{thread_rate:.1f}/s in one thread ({jobs} signatures each)")
        rows.append(_new_characters_row(pdf, ca, ec_cred, rows[0], iterations, now))
        log(f"  signing EC P-256, every name new characters: sign {rows[-1].sign_ms:.1f} ms")
    return rows


def _new_characters_row(pdf: bytes, ca: InstallationCA, cred: SignerCredential, ec_row: SignRow,
                        iterations: int, now: dt.datetime) -> SignRow:
    """The stamp's cold path: each name brings characters no earlier stamp in this process drew,
    so the font subset is cut again from the full CJK font (see `signbridge.pdf.pades`)."""
    fresh = iter(range(0x5B00, 0x9000, 2))  # CJK ideographs the bench uses nowhere else

    def sign_new_name() -> None:
        cp = next(fresh)
        sign_pdf(pdf, cred, signer_name=chr(cp) + chr(cp + 1), position=1, signed_at=now)

    return SignRow(key_type="EC P-256, every name with new characters", sign_ms=_time(sign_new_name, iterations),
                   validate_ms=ec_row.validate_ms, raw_sign_ms=ec_row.raw_sign_ms,
                   raw_verify_ms=ec_row.raw_verify_ms, iterations=iterations)


async def _rate(pool: SigningPool, jobs: list[SignJob], concurrency: int) -> float:
    """Signatures per second for `jobs`, `concurrency` at a time (as concurrent signing pages)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(job: SignJob) -> None:
        async with gate:
            await pool.run(sign_job, job)

    started = time.perf_counter()
    await asyncio.gather(*(one(job) for job in jobs))
    return len(jobs) / (time.perf_counter() - started)


async def _throughput(pdf: bytes, ca_dir: str, n: int, now: dt.datetime) -> tuple[float, float]:
    """The pool on every core vs one thread (`SIGNBRIDGE_SIGNING_PROCESSES=0`), same `n` signatures by
    distinct signers (a certificate each), after a warm-up that starts the children and their caches."""
    processes = default_processes()
    concurrency = 2 * processes

    def jobs(tag: str) -> list[SignJob]:
        return [SignJob(data=pdf, ca_dir=ca_dir, signer_id=f"{tag}-{i}", name="李四", email="", position=1,
                        signed_at=now) for i in range(n)]

    pool, thread = SigningPool(processes), SigningPool(0)
    try:
        await _rate(pool, jobs("warm")[:concurrency * 2], concurrency)
        pool_rate = await _rate(pool, jobs("pool"), concurrency)
        await _rate(thread, jobs("warm")[:2], concurrency)
        thread_rate = await _rate(thread, jobs("thread"), concurrency)
    finally:
        pool.shutdown()
    return pool_rate, thread_rate
