"""The webhook IM signature scheme: what a company's chat tool must compute, and what we refuse."""

from __future__ import annotations

import pytest

from connectors.chat.webhook.signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    headers,
    sign,
    verify,
)

SECRET = "s3cret"
TS = 1700000000
BODY = b'{"a":1}'
# hmac.new(b"s3cret", b'1700000000.{"a":1}', hashlib.sha256).hexdigest(), computed once by hand:
# integrators can check their implementation against it.
VECTOR = "v1=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"


def test_fixed_vector() -> None:
    assert sign(SECRET, TS, BODY) == VECTOR
    verify(SECRET, str(TS), VECTOR, BODY, now=TS)


def test_round_trip() -> None:
    h = headers(SECRET, BODY, now=TS)
    assert h == {TIMESTAMP_HEADER: str(TS), SIGNATURE_HEADER: VECTOR}
    verify(SECRET, h[TIMESTAMP_HEADER], h[SIGNATURE_HEADER], BODY, now=TS + 5)
    live = headers(SECRET, "中文 body".encode())
    verify(SECRET, live[TIMESTAMP_HEADER], live[SIGNATURE_HEADER], "中文 body".encode())


@pytest.mark.parametrize("offset", [301, -301, 3600, -86400])
def test_stale_and_future_timestamps(offset: int) -> None:
    with pytest.raises(SignatureError, match="300 s"):
        verify(SECRET, str(TS), VECTOR, BODY, now=TS + offset)


@pytest.mark.parametrize("offset", [300, -300, 0])
def test_edge_of_tolerance_accepted(offset: int) -> None:
    verify(SECRET, str(TS), VECTOR, BODY, now=TS + offset)


def test_custom_tolerance() -> None:
    with pytest.raises(SignatureError):
        verify(SECRET, str(TS), VECTOR, BODY, now=TS + 61, tolerance=60)


@pytest.mark.parametrize("body", [b'{"a":2}', b'{"a":1} ', b"", b'{"a": 1}'])
def test_tampered_body(body: bytes) -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, str(TS), VECTOR, body, now=TS)


def test_timestamp_is_inside_the_mac() -> None:
    """Replaying an old signature with a fresh timestamp does not work."""
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, str(TS + 10), VECTOR, BODY, now=TS + 10)


def test_wrong_secret() -> None:
    with pytest.raises(SignatureError):
        verify("other", str(TS), VECTOR, BODY, now=TS)


@pytest.mark.parametrize(("ts", "sig"), [(None, VECTOR), (str(TS), None), ("", VECTOR), (str(TS), ""), (None, None)])
def test_missing_headers(ts: str | None, sig: str | None) -> None:
    with pytest.raises(SignatureError, match="missing"):
        verify(SECRET, ts, sig, BODY, now=TS)


@pytest.mark.parametrize("ts", ["abc", "1700000000.5", "1e9", "0x10"])
def test_non_numeric_timestamp(ts: str) -> None:
    with pytest.raises(SignatureError, match="unix seconds"):
        verify(SECRET, ts, VECTOR, BODY, now=TS)


@pytest.mark.parametrize("sig", [VECTOR.removeprefix("v1="), "v2=" + VECTOR[3:], VECTOR.upper(), "v1=", "v1=zz"])
def test_malformed_signatures(sig: str) -> None:
    with pytest.raises(SignatureError):
        verify(SECRET, str(TS), sig, BODY, now=TS)


def test_rotation_accepts_any_listed_signature() -> None:
    old = sign("old-secret", TS, BODY)
    verify(SECRET, str(TS), f"{old},{VECTOR}", BODY, now=TS)
    verify(SECRET, str(TS), f"{VECTOR}, {old}", BODY, now=TS)
    verify(SECRET, str(TS), f"v2=abc,{VECTOR}", BODY, now=TS)
    with pytest.raises(SignatureError):
        verify(SECRET, str(TS), f"{old},v1=deadbeef", BODY, now=TS)


def test_reason_is_exposed() -> None:
    with pytest.raises(SignatureError) as err:
        verify(SECRET, None, None, BODY)
    assert err.value.reason == str(err.value)
