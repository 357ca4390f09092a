"""chat files: their own table, moved out of the listener's inbox

Until now "the sender's last file" lived in `inbound_events` under one key scheme per platform
(`feishu:file` and `dingtalk:file` rows keyed `{chat}/{sender}/{message}`, `wecom` rows keyed
`file:{chat}/{sender}/{message}`) and was found with prefix matches. Those rows move to
`chat_files`; the tenant was not recorded for Feishu and DingTalk, so it stays empty (an empty
tenant matches any tenant of the chat). The downgrade moves them back.
"""

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

from migrations.helpers import Table

revision = "4e8a1c7b2d90"
down_revision = "7c3f9a1e2b64"

CHAT_FILES = Table("chat_files", "id:int platform tenant chat_id sender_id message_id position:int name url:text "
                   "sha256? received_at:time", unique=("platform tenant chat_id message_id position",))

inbound = sa.table("inbound_events", sa.column("id", sa.Integer), sa.column("platform", sa.String),
                   sa.column("event_id", sa.String), sa.column("payload", sa.Text), sa.column("status", sa.String),
                   sa.column("received_at", sa.DateTime), sa.column("handled_at", sa.DateTime))
files = sa.table("chat_files", sa.column("platform", sa.String), sa.column("tenant", sa.String),
                 sa.column("chat_id", sa.String), sa.column("sender_id", sa.String),
                 sa.column("message_id", sa.String), sa.column("position", sa.Integer), sa.column("name", sa.String),
                 sa.column("url", sa.Text), sa.column("sha256", sa.String), sa.column("received_at", sa.DateTime))

# platform of the old inbox rows → (platform in chat_files, prefix of their key)
OLD = {"feishu:file": ("feishu", ""), "dingtalk:file": ("dingtalk", ""), "wecom": ("wecom", "file:")}


def _new_row(platform: str, key: str, payload: dict[str, Any], received_at: Any) -> dict[str, Any]:
    chat_id, sender_id, message_id = key.rsplit("/", 2)
    if platform == "feishu":
        url, name, tenant = f"feishu://{payload['message_id']}/{payload['file_key']}", payload["file_name"], ""
    elif platform == "dingtalk":
        url, name, tenant = f"dingtalk-file:{payload['downloadCode']}", payload["fileName"], ""
    else:
        url, name, tenant = f"wecom-media:{payload['media_id']}", payload["name"], payload.get("corp_id") or ""
    return {"platform": platform, "tenant": tenant, "chat_id": chat_id, "sender_id": sender_id,
            "message_id": message_id, "position": 0, "name": name, "url": url, "sha256": None,
            "received_at": received_at}


def upgrade() -> None:
    CHAT_FILES.create()
    op.create_index("ix_chat_files_sender", "chat_files", ["platform", "chat_id", "sender_id", "received_at"])
    op.create_index("ix_chat_files_message", "chat_files", ["platform", "chat_id", "message_id"])

    conn = op.get_bind()
    moved: list[int] = []
    rows: list[dict[str, Any]] = []
    for old, (platform, prefix) in OLD.items():
        query = sa.select(inbound).where(inbound.c.platform == old)
        for row in conn.execute(query):
            if not row.event_id.startswith(prefix):
                continue  # a WeCom inbox row that is not a file
            rows.append(_new_row(platform, row.event_id.removeprefix(prefix), json.loads(row.payload),
                                 row.received_at))
            moved.append(row.id)
    if rows:
        op.bulk_insert(files, rows)
        conn.execute(sa.delete(inbound).where(inbound.c.id.in_(moved)))


def downgrade() -> None:
    conn = op.get_bind()
    back: list[dict[str, Any]] = []
    for row in conn.execute(sa.select(files).where(files.c.position == 0)):
        key = f"{row.chat_id}/{row.sender_id}/{row.message_id}"
        if row.platform == "feishu":
            message_id, _, file_key = row.url.removeprefix("feishu://").partition("/")
            platform, payload = "feishu:file", {"event_id": row.message_id, "message_id": message_id,
                                                "file_key": file_key, "file_name": row.name}
        elif row.platform == "dingtalk":
            platform, payload = "dingtalk:file", {"downloadCode": row.url.removeprefix("dingtalk-file:"),
                                                  "fileName": row.name}
        elif row.platform == "wecom":
            platform, key = "wecom", f"file:{key}"
            payload = {"media_id": row.url.removeprefix("wecom-media:"), "name": row.name, "corp_id": row.tenant}
        else:
            continue  # platforms that kept no files before this revision
        back.append({"platform": platform, "event_id": key, "payload": json.dumps(payload, ensure_ascii=False),
                     "status": "handled", "received_at": row.received_at, "handled_at": row.received_at})
    if back:
        op.bulk_insert(inbound, back)
    CHAT_FILES.drop()
