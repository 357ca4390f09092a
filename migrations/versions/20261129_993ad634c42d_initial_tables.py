"""initial tables"""

from migrations.helpers import Table, tables

revision = "993ad634c42d"
down_revision = None

upgrade, downgrade = tables(
    Table("audit_events", "id:int request_id seq:int key action actor detail:text ip? user_agent? document_sha256? "
          "created_at:time prev_hash hash", unique=("request_id key", "request_id seq"), index=("request_id",)),
    Table("documents", "sha256:str64 name size:int content_type blob_key source created_at:time", key="sha256"),
    Table("identities", "id:int platform tenant user_id name email? mobile? external:bool active:bool "
          "updated_at:time", unique=("platform tenant user_id",), index=("platform",)),
    Table("local_events", "event_id flow_id kind signer_id? reason? occurred_at:time", key="event_id",
          index=("flow_id",)),
    Table("local_flows", "flow_id request_id title original_sha256 current_blob_key current_sha256 version:int status "
          "expires_at:time created_at:time", key="flow_id", unique=("request_id",)),
    Table("local_signers", "id:int flow_id signer_id name email? mobile? external:bool group:int position:int "
          "token_hash? token_expires_at:time? status acted_at:time? decline_reason? ip? user_agent?",
          unique=("flow_id signer_id", "token_hash"), index=("flow_id",)),
    Table("signing_requests", "request_id title provider provider_flow_id? chat_platform tenant chat_id "
          "source_event_id card_key initiator_id document_sha256? signed_sha256? status created_at:time "
          "updated_at:time", key="request_id", index=("provider_flow_id",)),
)
