"""OpenAI-compatible `POST /v1/chat/completions` and `GET /v1/models` (protocol, serving, router), as vLLM's
`entrypoints/openai` lays them out."""
