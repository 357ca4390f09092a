"""PAdES signing and validation for the built-in provider (pyHanko).

Every signature is an incremental update, so the signed file starts with exactly the bytes
that were sent for signing and earlier signatures stay valid: the workflow checks that prefix
before it accepts a signed file. Each signer gets a visible stamp (name + time, drawn with an
embedded CJK font so 张三 renders and extracts as text) in its own slot near the bottom of the
last page.

Both functions are synchronous and CPU-bound (pyHanko runs its own event loop internally):
call them from a worker thread, never directly on an event loop.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import importlib.resources
import textwrap
import threading
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from asn1crypto import x509 as asn1_x509
from fontTools import subset, ttLib
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.font.opentype import GlyphAccumulator, GlyphAccumulatorFactory
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.pdf_utils.writer import BasePdfFileWriter
from pyhanko.sign import fields, signers
from pyhanko.sign.diff_analysis import (
    DEFAULT_DIFF_POLICY,
    DiffResult,
    ModificationLevel,
    SuspiciousModification,
)
from pyhanko.sign.signers.pdf_signer import PdfSigningSession
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature
from pyhanko.stamp import BaseStampStyle, TextStampStyle
from pyhanko_certvalidator import ValidationContext

from signbridge.pdf.pki import SignerCredential, subject_full_name

# Stamp geometry (PDF points). Slots fill a grid left to right, then upwards from the bottom
# margin, so signature N never overlaps signature M on the same page.
STAMP_WIDTH = 160
STAMP_HEIGHT = 48
STAMP_GAP = 8
PAGE_MARGIN = 36
FONT_SIZE = 11
# The line under the signer's name: says what the mark is, in both languages a reader may have.
STAMP_LABEL = "电子签名 / Signed electronically"
# Page trees and form field trees are never this deep; a /Parent chain that is, loops.
MAX_LINEAGE = 64
# For laying out long names: a half-width character is about half an em wide, lines are 1.2 em
# apart, and the text keeps a few points from the border.
_CELL_EM = 0.55
_LEADING = 1.2
_STAMP_PADDING = 4

DEFAULT_FONT_PACKAGE = "cvttf_NotoSansCJK_Regular"
DEFAULT_FONT_FILE = "NotoSansCJKtc-Regular.otf"
# Every stamp can draw these without a new subset: the label, the date line and Latin names.
_ALWAYS_IN_SUBSET = frozenset(chr(c) for c in range(0x20, 0x7F)) | frozenset(STAMP_LABEL)
# A subset grows with the characters of the names it has drawn, up to this many characters;
# past it, it starts again from the name at hand. Chinese names draw from a few thousand
# characters, so a busy process settles on one subset that almost every new name hits.
MAX_SUBSET_CHARS = 4000
# What the stamp never needs: vertical metrics, and the layout tables (a stamp is a name and a
# date, drawn without ligatures or kerning; parsing GSUB/GPOS of a CJK font costs more than the rest).
_SUBSET_DROP = ("vhea", "vmtx", "VORG", "DSIG", "meta", "GSUB", "GPOS", "GDEF", "BASE", "JSTF")
# For CFF fonts pyHanko embeds only the CFF table; these are all the subsetter must touch.
_CFF_SUBSET_KEEP = frozenset({"CFF ", "head", "maxp", "GlyphOrder"})


class _GrowingSubset:
    """The stamp font cut down to the characters stamps have needed so far (thread-safe).

    pyHanko parses the whole font program for every signature and then subsets it: for a CJK
    font (65,000 glyphs, 16 MB) that parse was most of a signature's cost (~110 ms of CPU).
    Handing it a subset of a few thousand glyphs makes the parse nearly free; the full font is
    read again only when a name brings characters the subset lacks. Outlines and CIDs are the
    font's own, so the stamp and the text it maps back to are the same as from the full font.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._chars: frozenset[str] = frozenset()
        self._data = b""

    def covering(self, text: str) -> bytes:
        """Font bytes that hold every character of `text` (and printable ASCII)."""
        wanted = _ALWAYS_IN_SUBSET | frozenset(text)
        with self._lock:
            if not wanted <= self._chars:
                grown = self._chars | wanted
                chars = grown if len(grown) <= MAX_SUBSET_CHARS else wanted
                self._data, self._chars = self._cut(chars), chars
            return self._data

    def _cut(self, chars: frozenset[str]) -> bytes:
        options = subset.Options(desubroutinize=True, notdef_outline=True, hinting=False)
        options.drop_tables += list(_SUBSET_DROP)
        subsetter = subset.Subsetter(options)
        subsetter.populate(text="".join(sorted(chars)))
        font = ttLib.TTFont(self._path, lazy=True)
        subsetter.subset(font)
        buf = BytesIO()
        font.save(buf)
        return buf.getvalue()


@functools.lru_cache(maxsize=4)
def _subset_for(path: str) -> _GrowingSubset:
    return _GrowingSubset(path)


class _SubsetGlyphAccumulator(GlyphAccumulator):
    """pyHanko's glyph accumulator with a cheaper final subsetting."""

    def _extract_subset(self, options: subset.Options | None = None) -> None:
        if options is None and self.cff_charset is not None:
            # Only the CFF table gets embedded, so subsetting cmap/hmtx/... is wasted work.
            options = subset.Options(layout_closure=False, desubroutinize=True)
            options.drop_tables = [tag for tag in self.tt.keys() if tag not in _CFF_SUBSET_KEEP]
        super()._extract_subset(options)


@dataclass(frozen=True)
class _StampFontFactory(GlyphAccumulatorFactory):
    """A GlyphAccumulatorFactory for one stamp's `text`, over the process's growing subset."""

    text: str = ""

    def create_font_engine(self, writer: BasePdfFileWriter, obj_stream: object = None) -> GlyphAccumulator:
        if obj_stream is None and writer.stream_xrefs:
            obj_stream = writer.prepare_object_stream()  # like pyHanko's factory: keep font objects compact
        data = _subset_for(self.font_file).covering(self.text)
        return _SubsetGlyphAccumulator(writer, BytesIO(data), self.font_size, obj_stream=obj_stream)


def default_font_path() -> Path:
    """The Noto Sans CJK TC font shipped inside the `cvttf-NotoSansCJK-Regular` package."""
    return Path(str(importlib.resources.files(DEFAULT_FONT_PACKAGE) / DEFAULT_FONT_FILE))


def stamp_font(font_path: Path | None, font_size: int, text: str) -> GlyphAccumulatorFactory:
    """The font factory for a stamp showing `text`: `font_path`, or the bundled CJK font."""
    path = Path(font_path) if font_path is not None else default_font_path()
    return _StampFontFactory(str(path.resolve()), font_size=font_size, text=text)


@dataclass(frozen=True)
class SignatureReport:
    """One embedded signature's validation result, flattened for callers and logs."""

    field_name: str
    signer_name: str  # the certificate's whole name (its CN, unless that had to be shortened)
    intact: bool
    valid: bool
    trusted: bool
    coverage: str  # pyHanko SignatureCoverageLevel name: ENTIRE_FILE / ENTIRE_REVISION / ...
    modification_ok: bool  # no disallowed changes after this signature (pyHanko diff analysis)
    signed_at: dt.datetime | None


def _lineage(node: generic.DictionaryObject) -> Iterator[generic.DictionaryObject]:
    """`node`, its /Parent, that one's /Parent…: where inherited entries come from. A hostile
    file may make the chain loop, so it stops after MAX_LINEAGE nodes."""
    for _ in range(MAX_LINEAGE):
        yield node
        parent = node.get("/Parent")
        if parent is None:
            return
        node = parent.get_object()


def _page_box(page: generic.DictionaryObject) -> tuple[float, float, float, float]:
    """The visible area of a page: its (possibly inherited) CropBox, else MediaBox."""
    boxes: dict[str, generic.ArrayObject] = {}
    for node in _lineage(page):
        for key in ("/CropBox", "/MediaBox"):
            if key in node and key not in boxes:
                boxes[key] = node[key]
    box = boxes.get("/CropBox") or boxes.get("/MediaBox")
    if box is None:
        return (0.0, 0.0, 612.0, 792.0)  # US Letter: what PDF readers assume without a MediaBox
    x1, y1, x2, y2 = (float(v) for v in box)
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def stamp_box(
    page_box: tuple[float, float, float, float], position: int
) -> tuple[int, int, int, int] | None:
    """The rectangle for stamp `position` (1-based), or None when the page has no room left.

    Past the last slot that fits below the top margin, the signature is still made but left
    invisible (a stamp on top of another would make both unreadable).
    """
    if position < 1:
        raise ValueError(f"signature position must be 1 or more, got {position}")
    x0, y0, x1, y1 = page_box
    usable_w = x1 - x0 - 2 * PAGE_MARGIN
    usable_h = y1 - y0 - 2 * PAGE_MARGIN
    cols = max(1, int((usable_w + STAMP_GAP) // (STAMP_WIDTH + STAMP_GAP)))
    rows = max(1, int((usable_h + STAMP_GAP) // (STAMP_HEIGHT + STAMP_GAP)))
    row, col = divmod(position - 1, cols)
    if row >= rows:
        return None
    left = x0 + PAGE_MARGIN + col * (STAMP_WIDTH + STAMP_GAP)
    bottom = y0 + PAGE_MARGIN + row * (STAMP_HEIGHT + STAMP_GAP)
    return (round(left), round(bottom), round(left + STAMP_WIDTH), round(bottom + STAMP_HEIGHT))


class _TimedPdfSigner(signers.PdfSigner):
    """A PdfSigner that signs at a given time instead of `now`.

    The workflow decides when a person signed (the moment they confirmed); the signature's
    /M entry and the stamp must show that moment, not whenever a retried activity ran.
    """

    def __init__(
        self,
        signature_meta: signers.PdfSignatureMetadata,
        signer: signers.Signer,
        *,
        stamp_style: BaseStampStyle,
        new_field_spec: fields.SigFieldSpec,
        signing_time: dt.datetime,
    ) -> None:
        super().__init__(signature_meta, signer, stamp_style=stamp_style, new_field_spec=new_field_spec)
        self._signing_time = signing_time

    def init_signing_session(
        self, pdf_out: BasePdfFileWriter, existing_fields_only: bool = False
    ) -> PdfSigningSession:
        session = super().init_signing_session(pdf_out, existing_fields_only)
        session.system_time = self._signing_time
        return session


def _signature_rects(page: generic.DictionaryObject) -> list[tuple[float, float, float, float]]:
    """Rectangles of the signature widgets already on `page` (ours, or another tool's)."""
    rects = []
    for ref in page.get("/Annots", generic.ArrayObject()):
        annot = ref.get_object()
        field_type = next((node["/FT"] for node in _lineage(annot) if "/FT" in node), None)
        if annot.get("/Subtype") == "/Widget" and field_type == "/Sig" and "/Rect" in annot:
            x1, y1, x2, y2 = (float(v) for v in annot["/Rect"])
            rects.append((min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)))
    return rects


def free_stamp_box(
    page_box: tuple[float, float, float, float], position: int,
    taken: list[tuple[float, float, float, float]],
) -> tuple[int, int, int, int] | None:
    """The first stamp slot from `position` on that overlaps no signature already on the page.

    Within one flow every signer has their own position, so this is simply their slot; a
    document that arrives already signed (by an earlier round, or by another tool) pushes the
    new stamps past the old ones instead of on top of them.
    """
    while (box := stamp_box(page_box, position)) is not None:
        if not any(box[0] < t[2] and t[0] < box[2] and box[1] < t[3] and t[1] < box[3] for t in taken):
            return box
        position += 1
    return None


Rect = tuple[int, int, int, int]


def _target(data: bytes, placement: tuple[int, tuple[float, float, float, float]] | None,
            free_box: Callable[[generic.DictionaryObject], Rect | None],
            ) -> tuple[IncrementalPdfFileWriter, int, Rect | None]:
    """The incremental writer over `data`, the page to sign on (`placement`'s, else the last) and
    the rectangle: `placement`'s, else the first free one `free_box` finds on that page."""
    writer = IncrementalPdfFileWriter(BytesIO(data), strict=False)
    on_page = placement[0] if placement else -1
    page_ref, _ = writer.find_page_for_modification(on_page)
    if placement:
        x1, y1, x2, y2 = placement[1]
        return writer, on_page, (round(x1), round(y1), round(x2), round(y2))
    return writer, on_page, free_box(page_ref.get_object())


def free_field_name(writer: IncrementalPdfFileWriter, position: int, prefix: str = "Signature") -> str:
    """f"Signature{position}", unless a filled field has that name already (then a suffix).

    "Signature1" is also what most PDF tools call their first signature, and pyHanko refuses to
    sign into a filled field.
    """
    filled = {name for name, _, _ in fields.enumerate_sig_fields(writer, filled_status=True)}
    name, n = f"{prefix}{position}", 1
    while name in filled:
        n += 1
        name = f"{prefix}{position}_{n}"
    return name


def _display_width(text: str) -> int:
    """Width in half-width cells: CJK and other wide characters count two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def stamp_lines(name: str) -> str:
    """`name` broken into lines so that a long one stays as large as the stamp's box allows.

    The stamp shrinks its text to fit; one line of 80 characters would shrink to a few points
    high. Of the ways to wrap it, this takes the one whose text (with the label and date lines under it)
    shrinks least. Breaks fall between words where there are spaces; joining the lines with
    spaces (or, for names without spaces, with nothing) gives the name back.
    """

    def scale(lines: list[str]) -> float:
        wide = max(_display_width(line) for line in [*lines, STAMP_LABEL]) * FONT_SIZE * _CELL_EM
        high = (len(lines) + 2) * FONT_SIZE * _LEADING  # + the label and the date line
        return min(1.0, (STAMP_WIDTH - 2 * _STAMP_PADDING) / wide, (STAMP_HEIGHT - 2 * _STAMP_PADDING) / high)

    best = [name]
    for chars in range(len(name) - 1, 0, -1):
        lines = textwrap.wrap(name, chars, break_long_words=True, break_on_hyphens=False)
        if scale(lines) > scale(best):
            best = lines
        if len(lines) * FONT_SIZE * _LEADING > STAMP_HEIGHT * 4:
            break  # past this, more lines only shrink the text
    return "\n".join(best)


def stamp_time(moment: dt.datetime, tz: dt.tzinfo) -> str:
    """`moment` in `tz`, minutes precision, with the offset spelled out ("UTC+8", "UTC+5:30",
    "UTC"), so a reader in another zone can still tell the instant."""
    local = moment.astimezone(tz)
    offset = local.utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    zone = "UTC" if minutes == 0 else f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")
    return f"{local.strftime('%Y-%m-%d %H:%M')} {zone}"


# What a CMS signature holds besides certificates and the signature value: the SignedData and
# SignerInfo wrappers, algorithm identifiers, the signed attributes (content type, message digest,
# signing time, CMS algorithm protection) and the SignBridge reason; measured at ~600 bytes.
CMS_OVERHEAD = 1536


def reserved_bytes(signer: signers.Signer) -> int:
    """Room for the signature container (/Contents, hex: two characters a byte) without the dry
    run pyHanko otherwise makes to measure it, which costs a whole extra signature.

    The container's size is known from what goes in it: every certificate sent along (the
    signer's and the registry's chain), the issuer's name twice more (the SignerInfo's issuer
    and serial, PAdES's signing-certificate-v2 attribute), the signature value (an RSA modulus,
    or an ECDSA pair of two integers), plus the fixed CMS overhead and a safety margin of a
    quarter. Unused room is zero padding that validators ignore.
    """
    cert = signer.signing_cert
    if cert is None:
        raise ValueError("a signer without a certificate cannot size its signature")
    chain = {c.dump() for c in signer.cert_registry} | {cert.dump()}
    issuer = len(cert.issuer.dump())
    key = cert.public_key
    bits = key.bit_size
    value = bits // 8 + 16 if key.algorithm == "rsa" else 2 * (bits // 8 + 8) + 8
    der = sum(len(c) for c in chain) + 2 * issuer + value + CMS_OVERHEAD
    return 2 * (der + der // 4)


def sign_pdf(
    data: bytes,
    credential: SignerCredential,
    *,
    signer_name: str,
    position: int,
    signed_at: dt.datetime,
    reason: str = "SignBridge",
    font_path: Path | None = None,
    placement: tuple[int, tuple[float, float, float, float]] | None = None,
    tz: dt.tzinfo = dt.UTC,
    reserve: bool = True,
) -> bytes:
    """Append a PAdES signature by `credential` in stamp slot `position` on the last page, or
    at `placement` (0-based page, rectangle) — a template's signature field or beside an anchor.

    Returns the new file, which starts with exactly `data`. `signed_at` should be timezone
    aware; a naive value is taken as UTC. The stamp shows `signer_name` (whole, over several
    lines if it is long), "电子签名 / Signed electronically" and the time in `tz` with its offset
    (the signers' local time: "2026-12-05 17:49 UTC+8"); the signature's /Name holds the name
    too, and its /M the exact instant. The field is
    f"Signature{position}" unless the document already has a signed field of that name.
    `reserve=False` lets pyHanko size the container with a dry-run signature (the bench compares).
    """
    signed_at = signed_at if signed_at.tzinfo else signed_at.replace(tzinfo=dt.UTC)
    writer, on_page, box = _target(data, placement, lambda page: free_stamp_box(
        _page_box(page), position, _signature_rects(page)))
    field_name = free_field_name(writer, position)
    text_params = {
        "signer_name": stamp_lines(signer_name),
        "label": STAMP_LABEL,
        "signed_at": stamp_time(signed_at, tz),
    }
    font = stamp_font(font_path, FONT_SIZE, signer_name + STAMP_LABEL + text_params["signed_at"])
    style = TextStampStyle(
        stamp_text="%(signer_name)s\n%(label)s\n%(signed_at)s",
        text_box_style=TextBoxStyle(font=font, font_size=FONT_SIZE),
        border_width=1,
    )
    meta = signers.PdfSignatureMetadata(
        field_name=field_name,
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,
        reason=reason,
        name=signer_name,
    )
    pdf_signer = _TimedPdfSigner(
        meta,
        credential.signer,
        stamp_style=style,
        new_field_spec=fields.SigFieldSpec(field_name, on_page=on_page, box=box),
        signing_time=signed_at,
    )
    out = pdf_signer.sign_pdf(
        writer,
        appearance_text_params=text_params,
        bytes_reserved=reserved_bytes(credential.signer) if reserve else None,
    )
    signed: bytes = out.getvalue()
    return signed


SEAL_SIZE = 110  # a round seal's side on the page, in points (about 39 mm: a common 公章 is 40 mm)


def free_seal_box(page_box: tuple[float, float, float, float],
                  taken: list[tuple[float, float, float, float]]) -> tuple[int, int, int, int] | None:
    """The first square from the bottom-right corner (leftwards, then upwards) that overlaps no
    signature already on the page; personal stamps fill the page from the bottom-left."""
    x0, y0, x1, y1 = page_box
    step = SEAL_SIZE + STAMP_GAP
    top = y1 - PAGE_MARGIN - SEAL_SIZE
    bottom = y0 + PAGE_MARGIN
    while bottom <= top:
        left = x1 - PAGE_MARGIN - SEAL_SIZE
        while left >= x0 + PAGE_MARGIN:
            box = (round(left), round(bottom), round(left + SEAL_SIZE), round(bottom + SEAL_SIZE))
            if not any(box[0] < t[2] and t[0] < box[2] and box[1] < t[3] and t[1] < box[3] for t in taken):
                return box
            left -= step
        bottom += step
    return None


def seal_pdf(
    data: bytes,
    credential: SignerCredential,
    *,
    org_name: str,
    seal_png: bytes,
    position: int,
    signed_at: dt.datetime,
    placement: tuple[int, tuple[float, float, float, float]] | None = None,
) -> bytes:
    """Append an organisation's seal: a PAdES signature by the organisation's certificate whose
    appearance is the seal image, on the last page (or at `placement`), in a field of its own
    (f"Seal{position}"). Like `sign_pdf`, an incremental update: the result starts with `data`."""
    from PIL import Image  # only seals need Pillow
    from pyhanko.pdf_utils.images import PdfImage
    from pyhanko.stamp import StaticStampStyle

    signed_at = signed_at if signed_at.tzinfo else signed_at.replace(tzinfo=dt.UTC)
    writer, on_page, box = _target(data, placement, lambda page: free_seal_box(_page_box(page),
                                                                                _signature_rects(page)))
    field_name = free_field_name(writer, position, prefix="Seal")
    with Image.open(BytesIO(seal_png)) as img:
        image = img.convert("RGBA")
    style = StaticStampStyle(border_width=0, background=PdfImage(image), background_opacity=1.0)
    meta = signers.PdfSignatureMetadata(field_name=field_name, md_algorithm="sha256",
                                        subfilter=fields.SigSeedSubFilter.PADES, reason="SignBridge seal",
                                        name=org_name)
    pdf_signer = _TimedPdfSigner(meta, credential.signer, stamp_style=style,
                                 new_field_spec=fields.SigFieldSpec(field_name, on_page=on_page, box=box),
                                 signing_time=signed_at)
    signed: bytes = pdf_signer.sign_pdf(writer, bytes_reserved=reserved_bytes(credential.signer)).getvalue()
    return signed


def _report(sig: EmbeddedPdfSignature, context: ValidationContext) -> SignatureReport:
    status = validate_pdf_signature(sig, context)
    modification_ok = bool(status.docmdp_ok) and not isinstance(status.diff_result, SuspiciousModification)
    return SignatureReport(
        field_name=sig.field_name,
        signer_name=subject_full_name(status.signing_cert),
        intact=status.intact,
        valid=status.valid,
        trusted=status.trusted,
        coverage=status.coverage.name if status.coverage is not None else "UNKNOWN",
        modification_ok=modification_ok,
        signed_at=status.signer_reported_dt,
    )


def _context(trust_roots: list[asn1_x509.Certificate]) -> ValidationContext:
    return ValidationContext(trust_roots=list(trust_roots), allow_fetching=False, revocation_mode="soft-fail")


def validate_pdf(data: bytes, trust_roots: list[asn1_x509.Certificate]) -> list[SignatureReport]:
    """Validate every signature in `data` (file order) against exactly `trust_roots`, offline.

    No revocation fetching (allow_fetching=False, soft-fail): our own certificates carry no
    CRL/OCSP pointers, and the worker has no internet access anyway.
    """
    return validate_pdf_from(data, trust_roots, None).reports


@dataclass(frozen=True)
class ValidatedBase:
    """A version validated before: its length, SHA-256 and the reports of its signatures, all of
    which were intact, valid, trusted and without disallowed changes (only such versions are kept)."""

    size: int
    sha256: str
    reports: tuple[SignatureReport, ...]


@dataclass(frozen=True)
class Validation:
    """Reports for every signature of a file (file order), and which of them were verified now.

    `checked` names the signatures whose cryptography and revisions were validated in this call;
    the others' reports come from `base` (the validated version the file extends), re-judged
    only for what the later revisions changed."""

    reports: list[SignatureReport]
    checked: tuple[str, ...]
    base_sha256: str | None = None

    @property
    def ok(self) -> bool:
        return all(r.intact and r.valid and r.trusted and r.modification_ok for r in self.reports)


def _signed_end(sig: EmbeddedPdfSignature) -> int:
    """Where the bytes a signature covers end (the end of the revision it was made in)."""
    byte_range = sig.sig_object["/ByteRange"]
    return int(byte_range[2]) + int(byte_range[3])


def validate_pdf_from(data: bytes, trust_roots: list[asn1_x509.Certificate],
                      base: ValidatedBase | None) -> Validation:
    """Validate `data`; when it extends `base` byte for byte, only what changed since.

    Extending means: `data` starts with exactly the `base.size` bytes whose SHA-256 is
    `base.sha256`, the signatures inside that prefix are the ones `base` reports (same fields,
    same order), and none of them restricts later changes with a DocMDP or FieldMDP lock (those
    are judged per signature: the full validation does it). Then:

    - each signature after the prefix is validated completely (its cryptography, its chain to
      `trust_roots`, the revisions after it);
    - the earlier signatures are not recomputed: their bytes are the validated prefix, so
      their digests still match, and one diff analysis of the revisions after the prefix (the
      same rules pyHanko applies for each of them) says whether what was added is allowed.

    Anything else gets the full validation of every signature.
    """
    reader = PdfFileReader(BytesIO(data), strict=False)
    context = _context(trust_roots)
    embedded = sorted(reader.embedded_regular_signatures, key=lambda s: s.signed_revision)
    earlier = _extends(data, embedded, base)
    if base is None or earlier is None:
        reports = [_report(sig, context) for sig in embedded]
        return Validation(reports, tuple(sig.field_name for sig in embedded))
    newer = embedded[len(earlier):]
    reports = [_report(sig, context) for sig in newer]
    later_ok = True
    if earlier and len(data) > base.size:
        prefix_revisions = PdfFileReader(BytesIO(data[:base.size]), strict=False).xrefs.total_revisions
        diff = DEFAULT_DIFF_POLICY.review_file(reader, prefix_revisions - 1)
        later_ok = isinstance(diff, DiffResult) and diff.modification_level != ModificationLevel.OTHER
    coverage = "ENTIRE_FILE" if len(data) == base.size else "ENTIRE_REVISION"
    kept = [dataclasses.replace(r, coverage=coverage if r.coverage == "ENTIRE_FILE" else r.coverage,
                                modification_ok=r.modification_ok and later_ok) for r in base.reports]
    return Validation([*kept, *reports], tuple(sig.field_name for sig in newer), base.sha256)


def _extends(data: bytes, embedded: list[EmbeddedPdfSignature],
             base: ValidatedBase | None) -> list[EmbeddedPdfSignature] | None:
    """The signatures inside `base`'s prefix, if `data` extends `base` as `validate_pdf_from` needs."""
    if base is None or len(data) < base.size or hashlib.sha256(data[:base.size]).hexdigest() != base.sha256:
        return None
    earlier = [sig for sig in embedded if _signed_end(sig) <= base.size]
    if [sig.field_name for sig in earlier] != [r.field_name for r in base.reports]:
        return None
    if any(embedded[i] is not sig for i, sig in enumerate(earlier)):
        return None  # a signature inside the prefix after one outside it: not an extension
    if any(sig.docmdp_level is not None or sig.fieldmdp is not None for sig in earlier):
        return None
    return earlier
