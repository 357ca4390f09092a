"""chat messages and inbound events"""

from migrations.helpers import Table, tables

revision = "d091e9f85b38"
down_revision = "993ad634c42d"

upgrade, downgrade = tables(
    Table("chat_messages", "id:int platform card_key chat_id ref:text created_at:time updated_at:time",
          unique=("platform card_key",), index=("card_key",)),
    Table("inbound_events", "id:int platform event_id payload:text status received_at:time handled_at:time?",
          unique=("platform event_id",)),
)
