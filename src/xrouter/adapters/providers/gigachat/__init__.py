"""The GigaChat (Sber) provider: OAuth tokens, TLS with a custom CA, function calling and
streaming over GigaChat's classic chat API. docs/gigachat.md is the operator's guide.

Modules: `defaults` (hosts, scopes, limits; no I/O imports), `auth`, `tls`, `call_ids`,
`chat_protocol`, `chat_parser`, `provider` (GigaChatProvider), `factory`
(`create_gigachat_provider`). This package file imports nothing, so reading GigaChat's
defaults at startup does not load the HTTP stack.
"""
