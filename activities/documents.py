"""Prepare (fetch, check, store, record) and finish (download, verify, store) the document.

Both are idempotent: blobs are content-addressed and every row is an upsert keyed by the
request id or the SHA-256, so a retried activity changes nothing the first try already did.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import Deps
from activities.errors import connector_errors, rejected
from connectors.chat.base import InputProblem
from connectors.fetch import FetchPolicy, FetchRefused, fetch
from signbridge.core.models import (
    DocumentInfo,
    DocumentSource,
    FinishInput,
    Person,
    PreparedDocument,
    SigningRequest,
)
from signbridge.core.signers import SignerProblem, checked_signers, clean_name, signer_problem
from signbridge.pdf.check import DocumentProblem, check_pdf
from store import audit
from store.blobs import BlobNotFound, sha256_hex
from store.repos import documents, identities, signing_records
from store.repos.identities import Contact
from store.tables import Document, SigningRequestRecord

# How often `finish` heartbeats while it waits on a download or a validation; the workflow's
# heartbeat timeout for it should be a few times this (20 s).
FINISH_HEARTBEAT_EVERY = timedelta(seconds=5)


@contextlib.asynccontextmanager
async def heartbeating(every: timedelta) -> AsyncIterator[None]:
    """Heartbeat every `every` while the body runs, whatever it awaits (a download, a thread)."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every.total_seconds())
            activity.heartbeat()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class DocumentActivities:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @activity.defn(name="prepare")
    async def prepare(self, req: SigningRequest) -> PreparedDocument:
        """Everything that can be wrong with the user's input is found here, as `Rejected`.

        Signers come back as they will be signed: names cleaned, contacts normalised
        (`signbridge.signers`); the document is one the built-in provider has dry-run signed
        (`signbridge.pdf.check`).
        """
        self._record_request(req)
        audit.record(self.deps.engine, request_id=req.request_id, key="received", action="request.received",
                     actor=req.initiator.id,
                     detail={"title": req.title, "chat": req.chat.model_dump(), "provider": req.provider,
                             "groups": [[p.id for p in g] for g in req.groups]})
        problem = signer_problem(req.groups) or self._identity_problem(req)
        if problem:
            raise rejected(problem)
        chat = self.deps.chat(req.chat.platform)
        try:
            with connector_errors():
                resolved = [[await chat.resolve(req.chat, p) if not p.external else p for p in g] for g in req.groups]
                initiator = req.initiator if req.initiator.external else await chat.resolve(req.chat, req.initiator)
        except InputProblem as e:
            raise rejected(e.message) from e
        try:
            resolved = checked_signers(resolved)
        except SignerProblem as e:
            raise rejected(e.message) from e
        initiator = initiator.model_copy(update={"name": clean_name(initiator.name) or initiator.id})
        if req.provider not in self.deps.providers:
            raise rejected(f"未配置签署服务 {req.provider}（The provider {req.provider!r} is not configured）")
        if not req.documents:
            raise rejected("没有找到要签署的文件：请在同一条消息中附上 PDF（No file: attach the PDF to sign "
                           "to the same message）")
        source = req.documents[0]
        data = await self._fetch(req, source)
        if source.sha256 and sha256_hex(data) != source.sha256.lower():
            raise rejected(f"文件 {source.name} 与发送时的哈希不一致（{source.name} does not match the SHA-256 "
                           "the chat sent; it may have changed in transit）")
        try:
            pages = await asyncio.to_thread(check_pdf, data, self.deps.settings.max_document_bytes)
        except DocumentProblem as e:
            raise rejected(f"{source.name}: {e.message}") from e
        info = self._store(data, source.name, source=source.url or "upload")
        info = info.model_copy(update={"pages": pages})
        assert signing_records.update(self.deps.engine, req.request_id, document_sha256=info.sha256)
        audit.record(self.deps.engine, request_id=req.request_id, key="document", action="document.accepted",
                     actor="system", detail={"name": info.name, "size": info.size, "pages": pages},
                     document_sha256=info.sha256)
        self._remember_identities(req.model_copy(update={"groups": resolved, "initiator": initiator}))
        return PreparedDocument(**info.model_dump(), groups=resolved, initiator=initiator)

    @activity.defn(name="finish")
    async def finish(self, req: FinishInput) -> DocumentInfo:
        """Check the provider's file really is the original plus signatures before anyone gets it.

        Heartbeats every few seconds and at each stage (the detail names it), so with a heartbeat
        timeout a worker that dies mid-download or mid-validation is noticed in seconds, not at
        the two-minute start-to-close timeout.
        """
        async with heartbeating(FINISH_HEARTBEAT_EVERY):
            return await self._finish(req)

    async def _finish(self, req: FinishInput) -> DocumentInfo:
        provider = self.deps.provider(req.provider)
        activity.heartbeat("downloading")
        with connector_errors():
            signed = await provider.download_signed(req.flow_id)
            evidence = await provider.evidence(req.flow_id)
        activity.heartbeat("validating")
        original = self.deps.blobs.get(req.original.blob_key)
        starts_with_original = signed.startswith(original)
        if provider.incremental and not starts_with_original:
            raise ApplicationError(
                "The signed document does not start with the original bytes: refusing to deliver it",
                type="IntegrityError", non_retryable=True)
        # The built-in provider's signatures chain to our installation CA; external providers'
        # certificates are checked by their connectors (issue: provider connectors).
        reports = await asyncio.to_thread(self._validate, signed) if req.provider == "local" else []
        bad = [r for r in reports if not (r.intact and r.valid and r.trusted)]
        if req.provider == "local" and (len(reports) < req.expected_signatures or bad):
            raise ApplicationError(
                f"Signature check failed: {len(reports)} signatures, {len(bad)} not intact/valid/trusted",
                type="IntegrityError", non_retryable=True)
        activity.heartbeat("storing")
        name = req.original.name.removesuffix(".pdf") + ".signed.pdf"
        info = self._store(signed, name, source=f"provider:{req.provider}")
        signing_records.update(self.deps.engine, req.request_id, signed_sha256=info.sha256)
        audit.record(self.deps.engine, request_id=req.request_id, key="signed-document", action="document.signed",
                     actor=req.provider,
                     detail={"before": req.original.sha256, "after": info.sha256,
                             "starts_with_original": starts_with_original,
                             "check": "incremental" if provider.incremental else "provider-evidence",
                             "provider_evidence": evidence,
                             "signatures": [{"signer": r.signer_name, "field": r.field_name,
                                             "intact": r.intact, "valid": r.valid, "trusted": r.trusted}
                                            for r in reports]},
                     document_sha256=info.sha256)
        return info.model_copy(update={"pages": req.original.pages})

    # ---- helpers ----------------------------------------------------------------------------

    def _validate(self, data: bytes) -> list:  # type: ignore[type-arg]
        from signbridge.pdf.pades import validate_pdf
        from signbridge.pdf.pki import InstallationCA

        ca = InstallationCA.load_or_create(self.deps.settings.data_dir / "ca")
        return validate_pdf(data, [ca.certificate])

    async def _fetch(self, req: SigningRequest, source: DocumentSource) -> bytes:
        """An upload is in the blob store already; a REST caller's URL is fetched directly from the
        hosts allowed for REST (never with a chat's credentials); a chat's file through its file API."""
        if source.blob_key:
            try:
                return self.deps.blobs.get(source.blob_key)
            except BlobNotFound as e:
                raise rejected(f"上传的文件已不存在（The uploaded file {source.name} is gone）") from e
        settings = self.deps.settings
        try:
            with connector_errors():
                if source.origin == "api":
                    policy = FetchPolicy.from_settings(settings, settings.api_file_host_list,
                                                       "SIGNBRIDGE_API_FILE_HOSTS")
                    return await fetch(source.url or "", name=source.name, policy=policy,
                                       max_bytes=settings.max_document_bytes)
                return await self.deps.chat(req.chat.platform).download(req.chat, source, settings.max_document_bytes)
        except (InputProblem, FetchRefused) as e:
            raise rejected(e.message) from e

    def _store(self, data: bytes, name: str, source: str) -> DocumentInfo:
        key = self.deps.blobs.put(data)
        documents.record(self.deps.engine, Document(sha256=key, name=name, size=len(data), blob_key=key, source=source))
        return DocumentInfo(name=name, sha256=key, blob_key=key, size=len(data), pages=0)

    def _record_request(self, req: SigningRequest) -> None:
        signing_records.create(self.deps.engine, SigningRequestRecord(
            request_id=req.request_id, title=req.title, provider=req.provider,
            chat_platform=req.chat.platform, tenant=req.chat.tenant, chat_id=req.chat.chat_id,
            source_event_id=req.chat.source_event_id, card_key=req.request_id, initiator_id=req.initiator.id))

    def _identity_problem(self, req: SigningRequest) -> str | None:
        """Departed or deactivated staff can't be added as signers."""
        ids = [p.id for g in req.groups for p in g if not p.external]
        if not ids:
            return None
        rows = identities.inactive(self.deps.engine, req.chat.platform, req.chat.tenant, ids)
        if rows:
            names = "、".join(r.name for r in rows)
            return f"{names} 已离职或账号已停用，不能签署（{names} left the company or is deactivated）"
        return None

    def _remember_identities(self, req: SigningRequest) -> None:
        people: dict[str, Person] = {p.id: p for g in req.groups for p in g}
        people.setdefault(req.initiator.id, req.initiator)
        for p in people.values():
            identities.remember(self.deps.engine, req.chat.platform, req.chat.tenant, p.id,
                                Contact(name=p.name, email=p.email, mobile=p.mobile, external=p.external))
