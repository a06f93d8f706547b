"""The OpenAI Images door (shared/contracts/openai.md): generations and edits (synchronous; a
retried call joins its first task), and `GET /v1/models`."""
