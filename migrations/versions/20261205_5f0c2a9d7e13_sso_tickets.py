"""chat single sign-on tickets (OAuth states, verified sessions, used assertions)

Revision ID: 5f0c2a9d7e13
Revises: c3f1e7a9b240
"""

from migrations.helpers import Table

revision = "5f0c2a9d7e13"
down_revision = "c3f1e7a9b240"

SSO_TICKETS = Table("sso_tickets", "key_hash:str64 kind platform flow_id signer_id token_hash:str64 subject? "
                    "subject_name? created_at:time expires_at:time used_at:time?", key="key_hash",
                    index=("flow_id",))


def upgrade() -> None:
    SSO_TICKETS.create()


def downgrade() -> None:
    SSO_TICKETS.drop()
