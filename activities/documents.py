"""Prepare (fetch, check, store, record) and finish (download, verify, store) the document.

Both are idempotent: blobs are content-addressed and every row is an upsert keyed by the
request id or the SHA-256, so a retried activity changes nothing the first try already did.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import Deps
from activities.errors import connector_errors, rejected
from activities.parties import PartyProblem, resolve_parties
from activities.placements import PlacementProblem, anchor_slots, placements, template_slots
from connectors.chat.base import InputProblem
from connectors.convert.base import ConversionProblem, Converter, ConverterUnavailable, is_office, pdf_name
from connectors.convert.registry import build_converter
from connectors.esign import validated
from connectors.esign.base import ESignProvider, SeveralDocuments, contact_needs, several_documents
from connectors.fetch import FetchPolicy, FetchRefused, fetch
from signbridge.core.models import (
    DocumentInfo,
    DocumentSource,
    FinishInput,
    Person,
    PreparedDocument,
    SignedDocuments,
    SigningRequest,
)
from signbridge.core.orgs import seal_refusal, sealing
from signbridge.core.signers import (
    SignerProblem,
    checked_signers,
    clean_name,
    signer_problem,
    unreachable_signers,
)
from signbridge.pdf.check import DocumentProblem
from signbridge.pdf.forms import Box, FormProblem, TemplateForm, check_values, fill_and_flatten, read_form
from signbridge.pdf.jobs import check_job, validate_job
from signbridge.pdf.pades import Validation
from signbridge.pdf.pool import run_job
from store import audit
from store.blobs import BlobNotFound, sha256_hex
from store.repos import documents, identities, participants, signing_records, templates
from store.repos.identities import Contact
from store.tables import Document, SigningRequestRecord

MAX_DOCUMENTS = 10  # one request, one consent: more files than anyone reads before signing
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
        groups = self._known_contacts(req)
        problem = signer_problem(groups) or self._identity_problem(req)
        if problem:
            raise rejected(problem)
        chat = self.deps.chat(req.chat.platform)
        try:
            with connector_errors():  # the company directory names insiders; outsiders are never looked up
                resolved = [[await chat.resolve(req.chat, p) if not p.external else p for p in g] for g in groups]
                initiator = req.initiator if req.initiator.external else await chat.resolve(req.chat, req.initiator)
        except InputProblem as e:
            raise rejected(e.message) from e
        try:
            resolved = checked_signers(resolved)
        except SignerProblem as e:
            raise rejected(e.message) from e
        initiator = initiator.model_copy(update={"name": clean_name(initiator.name) or initiator.id})
        if problem := self._unreachable(req.provider, resolved):
            raise rejected(problem)
        if req.provider not in self.deps.providers:
            raise rejected(f"未配置签署服务 {req.provider}（The provider {req.provider!r} is not configured）")
        try:
            resolved, organisations = resolve_parties(self.deps.engine, resolved)
        except PartyProblem as e:
            raise rejected(e.message) from e
        if sealing([p for g in resolved for p in g]) and not getattr(self.deps.providers[req.provider], "org_seals",
                                                                     False):
            raise rejected(seal_refusal(req.provider, getattr(self.deps.providers[req.provider], "org_seal_note", "")))
        if unreachable := unreachable_signers(req.provider, contact_needs(self.deps.provider(req.provider)),
                                              resolved):
            raise rejected(unreachable)
        accepted, form = await self._documents(req)
        signer_ids = [p.id for g in resolved for p in g]
        try:
            slots = template_slots(form, 0, _page_boxes(accepted[0][1])) if form else []
            for index, (info, pdf) in enumerate(accepted):
                if not (form and index == 0):
                    slots += await asyncio.to_thread(anchor_slots, index, info.name, pdf, _page_boxes(pdf))
            placed = placements(slots, signer_ids, req.roles, form.roles if form else ())
        except (PlacementProblem, FormProblem) as e:
            raise rejected(e.message) from e
        infos = [info for info, _ in accepted]
        assert signing_records.update(self.deps.engine, req.request_id, document_sha256=infos[0].sha256)
        self._remember_identities(req.model_copy(update={"groups": resolved, "initiator": initiator}))
        participants.remember(self.deps.engine, req.request_id, req.chat.platform,
                              {**{p.id: "cc" for p in req.cc}, **{i: "signer" for i in signer_ids},
                               initiator.id: "initiator"})
        return PreparedDocument(**infos[0].model_dump(), groups=resolved, initiator=initiator,
                                documents=infos if len(infos) > 1 else [], placements=placed,
                                organisations=organisations)

    async def _documents(self, req: SigningRequest) -> tuple[list[tuple[DocumentInfo, bytes]], TemplateForm | None]:
        """Every document, fetched, converted, checked and stored — or the first reason to refuse:
        nothing is created at the provider unless all of them can be signed."""
        sources = list(req.documents)
        if not sources and req.template is None:
            raise rejected("没有找到要签署的文件：请在同一条消息中附上 PDF（No file: attach the PDF to sign "
                           "to the same message）")
        count = len(sources) + (1 if req.template else 0)
        if count > MAX_DOCUMENTS:
            raise rejected(f"一次最多签署 {MAX_DOCUMENTS} 份文件，这次有 {count} 份"
                           f"（At most {MAX_DOCUMENTS} documents per "
                           f"request; this one has {count}）")
        if count > 1 and not several_documents(self.deps.provider(req.provider)):
            raise rejected(f"签署服务 {req.provider} 一次只能签署一份文件，请分开发送"
                           f"（The provider {req.provider} signs one "
                           "document per request; send them one by one）")
        accepted: list[tuple[DocumentInfo, bytes]] = []
        form: TemplateForm | None = None
        if req.template is not None:
            form, filled = await self._filled_template(req)
            name = req.template.name
            accepted.append(await self._accept(req, f"{name}.pdf", filled, f"template:{name}"))
        for source in sources:
            data = await self._fetch(req, source)
            if source.sha256 and sha256_hex(data) != source.sha256.lower():
                raise rejected(f"文件 {source.name} 与发送时的哈希不一致（{source.name} does not match the SHA-256 "
                               "the chat sent; it may have changed in transit）")
            accepted.append(await self._accept(req, source.name, data, source.url or "upload"))
        return accepted, form

    async def _filled_template(self, req: SigningRequest) -> tuple[TemplateForm, bytes]:
        assert req.template is not None
        row = templates.get(self.deps.engine, req.template.name)
        if row is None:
            names = "、".join(t.name for t in templates.all_templates(self.deps.engine)) or "（无 / none）"
            raise rejected(f"没有名为「{req.template.name}」的模板。可用的模板：{names}"
                           f"（No template called “{req.template.name}”; available: {names}）")
        data = self.deps.blobs.get(row.sha256)
        try:
            form = await asyncio.to_thread(read_form, data)
            check_values(form, req.template.fields)
            filled = await asyncio.to_thread(fill_and_flatten, data, req.template.fields, self.deps.settings.stamp_font)
        except FormProblem as e:
            raise rejected(e.message) from e
        return form, filled

    async def _accept(self, req: SigningRequest, name: str, data: bytes, source: str) -> tuple[DocumentInfo, bytes]:
        """An Office file converted (the original kept beside the PDF), the PDF checked and stored."""
        original: DocumentInfo | None = None
        try:
            office = is_office(name, data)
            if office:
                if len(data) > self.deps.settings.max_document_bytes:
                    raise ConversionProblem(f"{name}: 文件超过大小上限（The file is larger than the limit）")
                original = self._store(data, name, source=source, content_type="application/octet-stream")
                data = await self._converter().to_pdf(name, data)
                name = pdf_name(name)
        except ConversionProblem as e:
            raise rejected(e.message) from e
        except ConverterUnavailable as e:
            raise ApplicationError(str(e), type="ConverterUnavailable", next_retry_delay=timedelta(
                seconds=e.retry_after) if e.retry_after else None) from e
        try:
            pages = await run_job(self.deps.settings.signing_processes, check_job, data,
                                  self.deps.settings.max_document_bytes)
        except DocumentProblem as e:
            raise rejected(f"{name}: {e.message}") from e
        limit = self.deps.settings.max_pages
        if pages > limit:
            raise rejected(f"{name} 有 {pages} 页，超过 {limit} 页的上限（{name} has {pages} pages, more than the "
                           f"{limit}-page limit; send only the pages to sign）")
        info = self._store(data, name, source=source).model_copy(update={"pages": pages})
        if original is not None:
            info = info.model_copy(update={"converted_from": original.name, "original_sha256": original.sha256})
        audit.record(self.deps.engine, request_id=req.request_id, key=f"document:{info.sha256}",
                     action="document.accepted", actor="system",
                     detail={"name": info.name, "size": info.size, "pages": pages,
                             **({"converted_from": original.name, "original_sha256": original.sha256}
                                if original else {})},
                     document_sha256=info.sha256)
        return info, data

    def _converter(self) -> Converter:
        return self.deps.converter or build_converter(self.deps.settings, self.deps.http)

    @activity.defn(name="finish")
    async def finish(self, req: FinishInput) -> SignedDocuments:
        """Check the provider's file really is the original plus signatures before anyone gets it.

        Heartbeats every few seconds and at each stage (the detail names it), so with a heartbeat
        timeout a worker that dies mid-download or mid-validation is noticed in seconds, not at
        the two-minute start-to-close timeout.
        """
        async with heartbeating(FINISH_HEARTBEAT_EVERY):
            return await self._finish(req)

    async def _finish(self, req: FinishInput) -> SignedDocuments:
        provider = self.deps.provider(req.provider)
        originals = req.originals or [req.original]
        activity.heartbeat("downloading")
        with connector_errors():
            if len(originals) > 1:
                assert isinstance(provider, SeveralDocuments)
                signed_files = await provider.download_documents(req.flow_id)
            else:
                signed_files = [await provider.download_signed(req.flow_id)]
            evidence = await provider.evidence(req.flow_id)
        if len(signed_files) != len(originals):
            raise ApplicationError(f"The provider returned {len(signed_files)} signed documents for {len(originals)}",
                                   type="IntegrityError", non_retryable=True)
        activity.heartbeat("validating")
        results: list[DocumentInfo] = []
        for original, signed in zip(originals, signed_files, strict=True):
            results.append(await self._verified(req, provider, original, signed, evidence, len(originals) > 1))
        signing_records.update(self.deps.engine, req.request_id, signed_sha256=results[0].sha256)
        return SignedDocuments(**results[0].model_dump(), documents=results if len(results) > 1 else [])

    async def _verified(self, req: FinishInput, provider: ESignProvider, original_info: DocumentInfo, signed: bytes,
                        evidence: dict[str, Any], several: bool) -> DocumentInfo:
        """Check the provider's file really is the original plus signatures before anyone gets it."""
        original = self.deps.blobs.get(original_info.blob_key)
        starts_with_original = signed.startswith(original)
        if provider.incremental and not starts_with_original:
            raise ApplicationError(
                "The signed document does not start with the original bytes: refusing to deliver it",
                type="IntegrityError", non_retryable=True)
        # The built-in provider's signatures chain to our installation CA; external providers'
        # certificates are checked by their connectors (issue: provider connectors).
        checked = await self._validate(signed) if req.provider == "local" else None
        reports = checked.reports if checked is not None else []
        bad = [r for r in reports if not (r.intact and r.valid and r.trusted)]
        if req.provider == "local" and (len(reports) < req.expected_signatures or bad):
            raise ApplicationError(
                f"Signature check failed: {len(reports)} signatures, {len(bad)} not intact/valid/trusted",
                type="IntegrityError", non_retryable=True)
        activity.heartbeat("storing")
        name = original_info.name.removesuffix(".pdf") + ".signed.pdf"
        info = self._store(signed, name, source=f"provider:{req.provider}")
        audit.record(self.deps.engine, request_id=req.request_id,
                     key=f"signed-document:{original_info.sha256}" if several else "signed-document",
                     action="document.signed", actor=req.provider,
                     detail={"before": original_info.sha256, "after": info.sha256,
                             "starts_with_original": starts_with_original,
                             "check": "incremental" if provider.incremental else "provider-evidence",
                             "provider_evidence": evidence,
                             "signatures": [{"signer": r.signer_name, "field": r.field_name,
                                             "intact": r.intact, "valid": r.valid, "trusted": r.trusted}
                                            for r in reports],
                             # Which signatures were verified now; the others' results come from the
                             # validated version the file extends (its SHA-256), whose coverage was checked.
                             **({"validated_now": list(checked.checked), "validated_on_top_of": checked.base_sha256}
                                if checked is not None else {})},
                     document_sha256=info.sha256)
        return info.model_copy(update={"pages": original_info.pages})

    # ---- helpers ----------------------------------------------------------------------------

    async def _validate(self, data: bytes) -> Validation:
        """Every signature's report, validating (in the signing pool) only what no earlier check
        covered: the signatures after the longest version validated before, if `data` extends one
        (the signing page records each version it makes); the result is recorded in turn."""
        settings = self.deps.settings
        base = await asyncio.to_thread(validated.base_for, self.deps.engine, data)
        result = await run_job(settings.signing_processes, validate_job, data,
                               str((settings.data_dir / "ca").resolve()), base)
        activity.logger.info("validated %d of %d signatures (%s)", len(result.checked), len(result.reports),
                             f"on top of validated version {base.sha256[:12]}" if result.base_sha256 and base
                             else "in full")
        await asyncio.to_thread(validated.record, self.deps.engine, data, result)
        return result

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

    def _store(self, data: bytes, name: str, source: str, content_type: str = "application/pdf") -> DocumentInfo:
        key = self.deps.blobs.put(data)
        documents.record(self.deps.engine, Document(sha256=key, name=name, size=len(data), blob_key=key, source=source,
                                                    content_type=content_type))
        return DocumentInfo(name=name, sha256=key, blob_key=key, size=len(data), pages=0)

    def _record_request(self, req: SigningRequest) -> None:
        signing_records.create(self.deps.engine, SigningRequestRecord(
            request_id=req.request_id, title=req.title, provider=req.provider,
            chat_platform=req.chat.platform, tenant=req.chat.tenant, chat_id=req.chat.chat_id,
            source_event_id=req.chat.source_event_id, card_key=req.request_id, initiator_id=req.initiator.id,
            bulk_id=req.bulk_id))

    def _unreachable(self, provider: str, groups: list[list[Person]]) -> str | None:
        """The built-in provider's links reach external signers only by SMS or email: one whose
        contact no configured sender can use is the request's problem now, not a STUCK send later."""
        if provider != "local":
            return None
        for person in (p for g in groups for p in g if p.external):
            if self.deps.notifier.route(person.email, person.mobile) is None:
                how = "短信" if person.mobile else "邮件"
                return (f"无法把签署链接发送给外部签署人 {person.name}：未配置{how}服务（The signing link cannot reach "
                        f"external signer {person.name}: no {'SMS' if person.mobile else 'email'} service is "
                        "configured; set SIGNBRIDGE_SMTP_URL or an SMS service, or give another contact）")
        return None

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

    def _known_contacts(self, req: SigningRequest) -> list[list[Person]]:
        """Signers from outside the company with the contacts `signbridge identities import` (or an
        earlier request) recorded for them, where the command gave none — the only place an
        outsider's contact comes from besides the command; the company directory is never asked."""
        def known(p: Person) -> Person:
            if not p.external or (p.email and p.mobile):
                return p
            row = identities.find(self.deps.engine, req.chat.platform, req.chat.tenant, p.id)
            if row is None:
                return p
            return p.model_copy(update={"email": p.email or row.email, "mobile": p.mobile or row.mobile})

        return [[known(p) for p in g] for g in req.groups]

    def _remember_identities(self, req: SigningRequest) -> None:
        people: dict[str, Person] = {p.id: p for g in req.groups for p in g}
        people.setdefault(req.initiator.id, req.initiator)
        for p in people.values():
            identities.remember(self.deps.engine, req.chat.platform, req.chat.tenant, p.id,
                                Contact(name=p.name, email=p.email, mobile=p.mobile, external=p.external))


def _page_boxes(pdf: bytes) -> list[Box]:
    from io import BytesIO

    from pypdf import PdfReader

    return [(float(p.mediabox.left), float(p.mediabox.bottom), float(p.mediabox.right), float(p.mediabox.top))
            for p in PdfReader(BytesIO(pdf)).pages]
