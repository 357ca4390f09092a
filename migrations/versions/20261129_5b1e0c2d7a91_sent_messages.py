"""sent messages (outbound idempotency)"""

from migrations.helpers import Table, tables

revision = "5b1e0c2d7a91"
down_revision = "d091e9f85b38"

upgrade, downgrade = tables(Table("sent_messages", "id:int platform key chat_id sent_at:time", unique=("platform key",)))
