"""provider links (SignBridge-hosted chat links to DocuSign embedded signing)"""

from migrations.helpers import Table, tables

revision = "7c3f9a1e2b64"
down_revision = "5b1e0c2d7a91"

upgrade, downgrade = tables(
    Table("provider_links", "token_hash:str64 provider flow_id signer_id expires_at:time created_at:time",
          key="token_hash", unique=("provider flow_id signer_id",), index=("flow_id",)),
)
