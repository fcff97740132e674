"""Yandex AI Studio: its OpenAI Responses-compatible API, with the quirks a plain
OpenAI-compatible client gets wrong. docs/providers.md ("## Yandex AI Studio") is the
operator's guide.

Modules: `spec` (YandexSpec, the default base URL; no I/O imports), `model_uri` (model ids as
`gpt://<folder>/<model>`), `snapshots` (cumulative text turned into deltas), `text_tools`
(tool calls printed as text recovered as function calls), `provider` (YandexProvider). This
package file imports nothing, so the configuration can read the spec without the HTTP stack.
"""
