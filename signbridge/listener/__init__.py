"""Chat listeners for deployments without a public URL (Feishu long connection, DingTalk Stream).

Each listener keeps one outbound connection to its platform, writes every event to the
`Inbox` (a durable row, deduplicated by the platform's event id) before acknowledging it, and
then hands it to the same handling code as the HTTP callback routes.
"""
