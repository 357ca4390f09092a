"""Signing links at rest: encrypted with a key derived from `SIGNBRIDGE_LINK_SECRET`.

A signing link is a bearer secret: whoever holds it can sign as that person. It must reach the
signer's chat, and be sent again with each reminder, but it must not sit in Temporal's history
(readable by anyone with the Temporal UI) nor in the database in the clear (backups, support
dumps). So the `open_group` activity seals it into the database and `send_link` opens it where
it is sent. Fernet (AES-CBC + HMAC-SHA256, from `cryptography`) also authenticates the text: a
row altered in the database fails to open instead of sending someone a forged link.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO = b"signbridge signing links v1"


class SealedLinkUnreadable(Exception):
    """The stored link does not open with this key (the link secret changed, or the row was altered)."""


class LinkVault:
    def __init__(self, secret: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def __repr__(self) -> str:  # never show key material
        return "LinkVault()"

    def seal(self, url: str) -> str:
        return self._fernet.encrypt(url.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as e:
            raise SealedLinkUnreadable("a stored signing link does not open with SIGNBRIDGE_LINK_SECRET") from e
