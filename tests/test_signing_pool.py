"""The signing pool (processes, crash recovery), the reserved signature container, and `finish`'s
incremental validation: real pyHanko signatures, real child processes, real SQLite."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
from io import BytesIO
from pathlib import Path

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.signers import SimpleSigner
from pyhanko_certvalidator.registry import SimpleCertificateStore

from connectors.esign import validated
from signbridge.pdf.check import DocumentProblem
from signbridge.pdf.jobs import SignJob, check_job, sign_job, validate_job
from signbridge.pdf.pades import ValidatedBase, Validation, reserved_bytes, sign_pdf, validate_pdf, validate_pdf_from
from signbridge.pdf.pki import InstallationCA, SignerCredential
from signbridge.pdf.pool import SigningPool, SigningUnavailable
from signbridge.pdf.sample import sample_contract
from store.db import create_all, get_engine

NOW = dt.datetime(2026, 12, 6, 9, 30, tzinfo=dt.UTC)


# ---- helpers the pool's children run (top level, so they pickle) ---------------------------

def crash_once(marker: str) -> int:
    """Kills its process the first time (as an out-of-memory kill would), answers the next time."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os._exit(13)
    return os.getpid()


def crash_always() -> int:
    os._exit(13)


# ---- the reserved container --------------------------------------------------------------

def _chain(key_of: list[object]) -> tuple[SignerCredential, asn1_x509.Certificate]:
    """A root, intermediates, and a leaf, one per key in `key_of` (root first); the leaf's
    credential carries every certificate above it."""
    now = dt.datetime.now(dt.UTC)
    certs: list[x509.Certificate] = []
    issuer_key, issuer_name = None, None
    for depth, key in enumerate(key_of):
        leaf = depth == len(key_of) - 1
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "张三" if leaf else f"Chain CA {depth}"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SignBridge test " + "长" * 20)])
        builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
                   .public_key(key.public_key())  # type: ignore[attr-defined]
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=not leaf, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(leaf, leaf, False, False, False, not leaf, not leaf, False, False),
                                  critical=True))
        certs.append(builder.sign(issuer_key or key, hashes.SHA256()))  # type: ignore[arg-type]
        issuer_key, issuer_name = key, name
    asn1 = [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in certs]
    key_info = asn1_keys.PrivateKeyInfo.load(key_of[-1].private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    signer = SimpleSigner(signing_cert=asn1[-1], signing_key=key_info,
                          cert_registry=SimpleCertificateStore.from_certs(asn1[:-1]))
    return SignerCredential(signer=signer, certificate=asn1[-1]), asn1[0]


@pytest.mark.parametrize("keys", [
    pytest.param(lambda: [ec.generate_private_key(ec.SECP256R1())] * 2, id="EC P-256"),
    pytest.param(lambda: [rsa.generate_private_key(public_exponent=65537, key_size=2048)] * 2, id="RSA 2048"),
    pytest.param(lambda: [rsa.generate_private_key(public_exponent=65537, key_size=3072)] * 2, id="RSA 3072"),
    pytest.param(lambda: [rsa.generate_private_key(public_exponent=65537, key_size=4096)] * 2, id="RSA 4096"),
    pytest.param(lambda: [rsa.generate_private_key(public_exponent=65537, key_size=4096),
                          *[ec.generate_private_key(ec.SECP384R1()) for _ in range(4)],
                          rsa.generate_private_key(public_exponent=65537, key_size=4096)], id="long chain"),
])
def test_reserved_container_fits_every_key_and_chain(keys: object) -> None:
    """The container is sized from the certificates and the key, not by a dry-run signature:
    whatever the key type, size and chain length, the real signature fits and validates."""
    credential, root = _chain(keys())  # type: ignore[operator]
    pdf = sample_contract("Reserved", pages=1)
    signed = sign_pdf(pdf, credential, signer_name="张三", position=1, signed_at=NOW)
    [report] = validate_pdf(signed, [root])
    assert report.intact and report.valid and report.trusted and report.coverage == "ENTIRE_FILE"
    # The /Contents hole is exactly what we reserved (hex), so no dry run sized it.
    contents = signed[signed.index(b"/Contents <") + len(b"/Contents <"):]
    assert contents.index(b">") == reserved_bytes(credential.signer)


def test_no_dry_run_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyHanko sizes a container by signing once for nothing unless told the size: count the signatures."""
    ca = InstallationCA.in_memory("Count")
    credential = ca.issue("u-1", "李四")
    calls = 0
    real = type(credential.signer).async_sign_raw

    async def counting(self: SimpleSigner, *args: object, **kwargs: object) -> bytes:
        nonlocal calls
        calls += 1
        return await real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(type(credential.signer), "async_sign_raw", counting)
    signed = sign_pdf(sample_contract("Once", pages=1), credential, signer_name="李四", position=1, signed_at=NOW)
    assert calls == 1
    assert validate_pdf(signed, [ca.certificate])[0].valid


# ---- the pool ----------------------------------------------------------------------------

def _serial(signed: bytes) -> int:
    [sig] = PdfFileReader(BytesIO(signed), strict=False).embedded_regular_signatures
    return int(sig.signer_cert.serial_number)


async def test_pool_signs_in_other_processes_with_cached_certificates(tmp_path: Path) -> None:
    pool = SigningPool(1)
    try:
        pdf = sample_contract("Pool", pages=1)
        ca_dir = str(tmp_path / "ca")
        job = SignJob(data=pdf, ca_dir=ca_dir, signer_id="u-1", name="王五", email="w@example.com", position=1,
                      signed_at=NOW)
        first = await pool.run(sign_job, job)
        second = await pool.run(sign_job, job)
        ca = InstallationCA.load_or_create(Path(ca_dir))  # the children made it on first use
        for signed in (first, second):
            [report] = await asyncio.to_thread(validate_pdf, signed.data, [ca.certificate])
            assert report.intact and report.valid and report.trusted and report.signer_name == "王五"
        assert first.validation is None  # no validated base given: nothing checked
        # The child issued one certificate for the signer and reused it; another signer gets their own.
        other = await pool.run(sign_job, SignJob(data=pdf, ca_dir=ca_dir, signer_id="u-2", name="王五",
                                                 email="w@example.com", position=1, signed_at=NOW))
        assert _serial(first.data) == _serial(second.data) != _serial(other.data)
        pid = await pool.run(os.getpid)
        assert pid != os.getpid()
    finally:
        pool.shutdown()


async def test_document_problem_crosses_the_process_boundary() -> None:
    pool = SigningPool(1)
    try:
        with pytest.raises(DocumentProblem) as caught:
            await pool.run(check_job, b"not a pdf at all", 1 << 20)
        assert caught.value.code == "not_pdf" and "not a PDF" in caught.value.message
        assert await pool.run(check_job, sample_contract("Fine", pages=2), 1 << 20) == 2
    finally:
        pool.shutdown()


async def test_a_dead_child_is_replaced_and_the_job_retried_once(tmp_path: Path) -> None:
    pool = SigningPool(1)
    try:
        pid = await pool.run(crash_once, str(tmp_path / "crashed"))
        assert pid != os.getpid() and pool.rebuilds == 1
        with pytest.raises(SigningUnavailable):
            await pool.run(crash_always)
        assert pool.rebuilds == 3
        # ... and the pool still signs afterwards: no job is failed for ever by an earlier crash.
        assert await pool.run(check_job, sample_contract("After", pages=1), 1 << 20) == 1
    finally:
        pool.shutdown()


async def test_zero_processes_runs_in_a_thread() -> None:
    pool = SigningPool(0)
    assert await pool.run(os.getpid) == os.getpid()


# ---- incremental validation --------------------------------------------------------------

def _versions(ca: InstallationCA, pdf: bytes) -> tuple[bytes, bytes, Validation]:
    """Two serial signatures, the first validated (against the unsigned original) as the signing page does."""
    v1 = sign_pdf(pdf, ca.issue("u-1", "Alice Chen"), signer_name="Alice Chen", position=1, signed_at=NOW)
    first = validate_pdf_from(v1, [ca.certificate], ValidatedBase(len(pdf), hashlib.sha256(pdf).hexdigest(), ()))
    assert first.ok and first.checked == ("Signature1",)
    v2 = sign_pdf(v1, ca.issue("u-2", "王五"), signer_name="王五", position=2, signed_at=NOW)
    return v1, v2, first


def _base(data: bytes, validation: Validation) -> ValidatedBase:
    return ValidatedBase(len(data), hashlib.sha256(data).hexdigest(), tuple(validation.reports))


def test_only_the_newer_signatures_are_validated() -> None:
    ca = InstallationCA.in_memory("Incremental")
    v1, v2, first = _versions(ca, sample_contract("Two", pages=1))
    result = validate_pdf_from(v2, [ca.certificate], _base(v1, first))
    assert result.checked == ("Signature2",) and result.base_sha256 == hashlib.sha256(v1).hexdigest()
    assert result.ok and [r.signer_name for r in result.reports] == ["Alice Chen", "王五"]
    full = validate_pdf_from(v2, [ca.certificate], None)
    assert full.checked == ("Signature1", "Signature2") and full.ok
    assert [(r.field_name, r.coverage, r.modification_ok) for r in result.reports] == \
        [(r.field_name, r.coverage, r.modification_ok) for r in full.reports]


def test_a_tampered_earlier_signature_is_still_refused() -> None:
    ca = InstallationCA.in_memory("Tamper")
    v1, v2, first = _versions(ca, sample_contract("Tampered", pages=1))
    at = v2.index(b"SignBridge Contract") if b"SignBridge Contract" in v2 else v2.index(b"BT")
    tampered = v2[:at] + bytes([v2[at] ^ 0x01]) + v2[at + 1:]
    result = validate_pdf_from(tampered, [ca.certificate], _base(v1, first))
    assert result.base_sha256 is None and len(result.checked) == 2  # not an extension: full validation
    assert not result.ok and not result.reports[0].intact


def test_a_disallowed_later_change_is_refused() -> None:
    """After the validated version someone rewrites the page, then a second signer signs: the new
    signature is fine on its own, but the first one's coverage no longer holds."""
    ca = InstallationCA.in_memory("Change")
    pdf = sample_contract("Changed", pages=1)
    v1, _, first = _versions(ca, pdf)
    writer = IncrementalPdfFileWriter(BytesIO(v1), strict=False)
    page_ref, _ = writer.find_page_for_modification(0)
    page = page_ref.get_object()
    page["/Contents"] = writer.add_object(generic.StreamObject(stream_data=b"BT 72 700 Td (PAY 1,000,000) Tj ET"))
    writer.update_container(page)
    out = BytesIO()
    writer.write(out)
    changed = sign_pdf(out.getvalue(), ca.issue("u-2", "王五"), signer_name="王五", position=2, signed_at=NOW)
    result = validate_pdf_from(changed, [ca.certificate], _base(v1, first))
    assert result.checked == ("Signature2",) and result.reports[1].valid
    assert not result.reports[0].modification_ok and not result.ok
    assert not validate_pdf_from(changed, [ca.certificate], None).reports[0].modification_ok  # as in full


def test_finish_finds_the_longest_validated_version(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    ca = InstallationCA.load_or_create(ca_dir)
    engine = get_engine(f"sqlite:///{tmp_path / 'v.db'}")
    create_all(engine)
    pdf = sample_contract("Finish", pages=1)
    v1, v2, first = _versions(ca, pdf)
    assert validated.base_for(engine, v2) is None
    assert validated.record(engine, v1, first)
    base = validated.base_for(engine, v2)
    assert base is not None and base.size == len(v1) and len(base.reports) == 1
    result = validate_job(v2, str(ca_dir), base)
    assert result.checked == ("Signature2",) and result.ok
    assert validated.record(engine, v2, result)
    again = validated.base_for(engine, v2)  # finish retried: the whole file is validated already
    assert again is not None and again.size == len(v2)
    assert validate_job(v2, str(ca_dir), again).checked == ()
    # A signature by someone else's CA: checked alone, refused, and never recorded as validated.
    other = InstallationCA.in_memory("Other")
    foreign = sign_pdf(v2, other.issue("x-1", "Mallory"), signer_name="Mallory", position=3, signed_at=NOW)
    result = validate_job(foreign, str(ca_dir), validated.base_for(engine, foreign))
    assert result.checked == ("Signature3",) and not result.ok and not result.reports[2].trusted
    assert not validated.record(engine, foreign, result)
    found = validated.base_for(engine, foreign)
    assert found is not None and found.size == len(v2)


OWNER = """
import asyncio, os, sys
from signbridge.pdf.pool import SigningPool

async def main() -> None:
    pool = SigningPool(2)
    pids = await asyncio.gather(pool.run(os.getpid), pool.run(os.getpid))
    print(" ".join(str(p) for p in set(pids)), flush=True)
    await asyncio.sleep(3600)  # killed before this ends, without shutting the pool down

asyncio.run(main())
"""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")  # a zombie has exited


async def test_children_exit_when_their_owner_is_killed() -> None:
    """An API or worker process killed outright (SIGKILL, the OOM killer) must not leave its signing
    processes (and their forkserver) waiting for jobs for ever."""
    import signal
    import subprocess
    import sys

    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, cwd=Path(__file__).parents[1])
    try:
        assert owner.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(owner.stdout.readline), timeout=60)
        children = [int(p) for p in line.split()]
        assert children and owner.pid not in children
        assert not any(_gone(p) for p in children)
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        async with asyncio.timeout(30):  # each child looks for its owner every OWNER_CHECK_SECONDS
            while not all(_gone(p) for p in children):
                await asyncio.sleep(0.2)
    finally:
        if owner.poll() is None:
            owner.kill()
