"""Small pure pieces: signer checks, signed download links, the neutral card."""

from __future__ import annotations

from datetime import UTC, datetime

from signbridge.core import links
from signbridge.core.cards import build_card
from signbridge.core.models import ChatRef, Person, SignerState, SignStatus, StatusView
from signbridge.core.settings import Settings
from signbridge.core.signers import signer_problem

A = Person(id="u-1", name="李四")
B = Person(id="u-2", name="王五")
X = Person(id="x-9", name="客户A", external=True, email="a@customer.example")


def test_signer_problems() -> None:
    assert signer_problem([[A, B], [X]]) is None
    assert "No signers" in (signer_problem([]) or "")
    assert "empty" in (signer_problem([[A], []]) or "")
    assert "twice" in (signer_problem([[A], [A]]) or "")
    nocontact = Person(id="x-1", name="客户B", external=True)
    assert "email" in (signer_problem([[nocontact]]) or "")


def test_file_links_expire_and_bind_the_key() -> None:
    s = Settings(link_secret="k1", public_url="https://sb.example/")  # type: ignore[arg-type]
    url = links.file_url(s, "ab" * 32, "c.pdf", now=1000.0)
    assert url.startswith("https://sb.example/files/" + "ab" * 32 + "?")
    from urllib.parse import parse_qs, urlparse

    q = parse_qs(urlparse(url).query)
    exp, sig = int(q["expires"][0]), q["sig"][0]
    assert links.verify_file(s, "ab" * 32, exp, sig, "c.pdf", now=1001.0) == links.GenuineLink("c.pdf")
    assert not links.verify_file(s, "cd" * 32, exp, sig, "c.pdf", now=1001.0)  # bound to the file
    assert not links.verify_file(s, "ab" * 32, exp, sig, "d.pdf", now=1001.0)  # and to its name
    assert not links.verify_file(s, "ab" * 32, exp, sig, now=1001.0)
    assert not links.verify_file(s, "ab" * 32, exp, sig, "c.pdf", now=exp + 1.0)  # expired
    other = Settings(link_secret="k2")  # type: ignore[arg-type]
    assert not links.verify_file(other, "ab" * 32, exp, sig, "c.pdf", now=1001.0)
    assert not links.verify_file(s, "ab" * 32, exp, "é" * 64, "c.pdf", now=1001.0)  # not a MAC: refused, no error


def test_download_names_are_cleaned_and_signed_as_cleaned() -> None:
    s = Settings(link_secret="k1")  # type: ignore[arg-type]
    for raw, clean in (("../../etc/passwd", "passwd"), ("..\\evil.pdf", "evil.pdf"), ("采购合同.pdf", "采购合同.pdf"),
                       ("a\u202egnp.pdf", "agnp.pdf"), ("x\x00y\u200b.pdf", "xy.pdf"), ("a\r\nb.pdf", "a b.pdf"),
                       ("..", "document.pdf"),
                       ('re:port?.pdf', "re_port_.pdf"), ("合" * 300, "合" * 200)):
        assert links.download_name(raw) == clean, raw
        from urllib.parse import parse_qs, urlparse

        q = parse_qs(urlparse(links.file_url(s, "ab" * 32, raw, now=1000.0)).query)
        assert q["name"] == [clean]
        assert links.verify_file(s, "ab" * 32, int(q["expires"][0]), q["sig"][0], clean, now=1001.0)


def test_links_made_before_names_were_signed_work_until_they_expire() -> None:
    import hashlib
    import hmac

    s = Settings(link_secret="k1")  # type: ignore[arg-type]
    exp = 2000
    old_sig = hmac.new(b"k1", f"file:{'ab' * 32}:{exp}".encode(), hashlib.sha256).hexdigest()
    assert links.verify_file(s, "ab" * 32, exp, old_sig, "../../x.sh", now=1001.0) == links.GenuineLink(None)
    assert not links.verify_file(s, "ab" * 32, exp, old_sig, None, now=exp + 1.0)


def _view(status: SignStatus) -> StatusView:
    return StatusView(
        request_id="r", title="合同", status=status, provider="local", initiator=Person(id="u-0", name="张三"),
        chat=ChatRef(chat_id="g", source_event_id="e"),
        signers=[SignerState(person=A, group=0, status="signed", signed_at=datetime(2026, 1, 1, tzinfo=UTC)),
                 SignerState(person=X, group=1, status="notified")],
    )


def test_card_buttons_follow_the_status() -> None:
    card = build_card(_view(SignStatus.IN_PROGRESS))
    assert [b.action for b in card.buttons] == ["remind", "cancel"]
    assert card.status_text == "签署中"
    assert [s.state_text for s in card.signers] == ["已签署", "待签署"]
    stuck = build_card(_view(SignStatus.STUCK), lang="en")
    assert [b.action for b in stuck.buttons] == ["retry", "cancel"]
    assert build_card(_view(SignStatus.COMPLETED)).buttons == []
    assert card.as_dict()["signers"][1]["external"] is True  # type: ignore[index]
