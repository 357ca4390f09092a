"""Credentials that travel in URLs, kept out of logs.

A signing link's token is the signer's whole credential (`/sign/<token>`,
`/esign/docusign/sign/<token>`), and a download link's `sig` lets anyone fetch the signed
contract. uvicorn's access log prints every path with its query, so a console or a log store
would hold working links. `RedactSecrets` rewrites every record that passes the handler it is
attached to; `configure_logging` attaches it to SignBridge's one handler, and the API's
`--log-config` for docker-compose names it too.
"""

from __future__ import annotations

import logging
import re

REDACTED = "<redacted>"
# A path segment after /sign/ (the built-in provider's pages and DocuSign's links alike), and the
# values of query parameters that are credentials: download signatures, platform signatures, tokens.
_SIGN_PATH = re.compile(r"(/sign/)[^/?#\s\"']+")
_SECRET_PARAM = re.compile(r"([?&](?:sig|signature|msg_signature|token|access_token)=)[^&#\s\"']*", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with signing tokens and URL signatures replaced by `<redacted>`."""
    return _SECRET_PARAM.sub(rf"\1{REDACTED}", _SIGN_PATH.sub(rf"\1{REDACTED}", text))


class RedactSecrets(logging.Filter):
    """A handler filter: the record's message, formatted, then redacted (it never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
