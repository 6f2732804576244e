"""OpenAI's Responses API, `POST /v1/responses` (protocol, convert, stream, router): read as a chat request and run
by the same loop, written back in the Responses API's items and typed stream events."""
