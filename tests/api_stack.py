"""The whole API over real HTTP for the input tests (`test_bad_input.py`, `test_schemathesis.py`).

The real app under uvicorn (httptools, as deployed) on a loopback port, against the real Temporal
dev server, with the harness's worker and webhook sink behind it, every chat platform and every
provider webhook configured (with test secrets and API bases nothing listens on: a refused
callback must never reach them), and one open flow whose two signers' links are live.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from signbridge.core import links
from signbridge.core.settings import Settings
from signbridge.pdf.sample import sample_contract
from store.blob_factory import make_blob_store
from tests.conftest import make_settings
from tests.harness import A, B, Harness, harness
from tests.provider_cases import docuseal, docusign, dropbox_sign, esign_cn, fadada
from tests.sim.servers import serve

NOWHERE = "http://127.0.0.1:9"  # the discard port: a connector that calls out fails at once
AES_KEY = "k" * 43  # WeCom's and DingTalk's EncodingAESKey: 43 characters of base64
PLATFORM_ENV = {
    "SIGNBRIDGE_SLACK_SIGNING_SECRET": "slack-signing-secret", "SIGNBRIDGE_SLACK_BOT_TOKEN": "xoxb-test",
    "SIGNBRIDGE_SLACK_API_BASE": NOWHERE,
    "SIGNBRIDGE_FEISHU_APP_ID": "cli_test", "SIGNBRIDGE_FEISHU_APP_SECRET": "feishu-secret",
    "SIGNBRIDGE_FEISHU_ENCRYPT_KEY": "feishu-encrypt-key", "SIGNBRIDGE_FEISHU_VERIFICATION_TOKEN": "feishu-token",
    "SIGNBRIDGE_FEISHU_API_BASE": NOWHERE,
    "SIGNBRIDGE_DINGTALK_APP_KEY": "ding-key", "SIGNBRIDGE_DINGTALK_APP_SECRET": "ding-secret",
    "SIGNBRIDGE_DINGTALK_AES_KEY": AES_KEY, "SIGNBRIDGE_DINGTALK_TOKEN": "ding-token",
    "SIGNBRIDGE_DINGTALK_API_BASE": NOWHERE, "SIGNBRIDGE_DINGTALK_OAPI_BASE": NOWHERE,
    "SIGNBRIDGE_WECOM_CORP_ID": "ww-test", "SIGNBRIDGE_WECOM_CORP_SECRET": "wecom-secret",
    "SIGNBRIDGE_WECOM_AGENT_ID": "1000002", "SIGNBRIDGE_WECOM_TOKEN": "wecom-token",
    "SIGNBRIDGE_WECOM_ENCODING_AES_KEY": AES_KEY, "SIGNBRIDGE_WECOM_API_BASE": NOWHERE,
    # The providers' webhooks with the secrets their conformance cases sign with.
    **{k: v for case in (docuseal.CASE, docusign.CASE, dropbox_sign.CASE, esign_cn.CASE, fadada.CASE)
       for k, v in case.env.items()},
}
AUTH = {"Authorization": "Bearer test-api-key"}
UPLOAD_LIMIT = 64 * 1024  # SIGNBRIDGE_MAX_DOCUMENT_BYTES here, so the upload limit is cheap to pass


@dataclass
class ApiStack:
    url: str
    h: Harness
    settings: Settings
    request_id: str  # an open flow
    tokens: tuple[str, str]  # its two signers' link tokens
    file_key: str  # a stored document, for download links

    def file_link(self, name: str = "合同.pdf") -> str:
        return links.file_url(self.settings, self.file_key, name).removeprefix(self.settings.public_url)


@asynccontextmanager
async def api_stack(dev_env: WorkflowEnvironment, data_dir: Path) -> AsyncIterator[ApiStack]:
    settings = make_settings(data_dir, max_document_bytes=UPLOAD_LIMIT)
    async with harness(dev_env, settings) as h:
        handle = await h.start([[A, B]])
        tokens = [h.path(await h.link(handle, person)).rsplit("/", 1)[1] for person in (A, B)]
        file_key = make_blob_store(h.settings).put(sample_contract("Download"))
        with pytest.MonkeyPatch.context() as env:
            for key, value in PLATFORM_ENV.items():  # only the API reads them, as it starts
                env.setenv(key, value)
            with serve(create_app(h.settings, h.client)) as url:
                yield ApiStack(url, h, h.settings, handle.id, (tokens[0], tokens[1]), file_key)
