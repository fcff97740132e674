"""The gateway's window -> an upstream's `POST /responses/compact`, and its answer back.
Pure, no I/O.

The answer is relayed to the client, so it is checked first: a 2xx that is not a compaction
(another object, an output item without a `type`, a compaction item without its
`encrypted_content`) is a 502 saying what came back, never a success.
"""

from __future__ import annotations

import msgspec

from xrouter.adapters.providers.malformed import decode_answer, malformed_answer
from xrouter.adapters.providers.openai_compatible.responses_protocol import upstream_items
from xrouter.application.ports import CompactCall
from xrouter.domain.compaction import CompactionResource
from xrouter.domain.responses import JSONObject

PATH = "/responses/compact"
_EXPECTED = "a compaction (object 'response.compaction')"
_decoder = msgspec.json.Decoder(CompactionResource)


def build_compact_payload(call: CompactCall) -> JSONObject:
    """The JSON body (as builtins) of `POST /responses/compact` for `call`."""
    payload: JSONObject = {
        "model": call.route.upstream_model,
        "input": upstream_items(call.items),
    }
    if call.instructions:
        payload["instructions"] = call.instructions
    if call.prompt_cache_key:
        payload["prompt_cache_key"] = call.prompt_cache_key
    return payload


def parse_compaction(
    body: bytes, *, provider: str, content_type: str | None = None
) -> CompactionResource:
    """The upstream's compaction, or the malformed-answer error (ProviderError, 502)."""
    resource = decode_answer(
        _decoder, body, provider=provider, expected=_EXPECTED, content_type=content_type
    )
    for index, item in enumerate(resource.output):
        kind = item.get("type")
        problem = None
        if not isinstance(kind, str):
            problem = f"output[{index}] has no string `type`"
        elif kind == "compaction" and not isinstance(item.get("encrypted_content"), str):
            problem = f"output[{index}] is a compaction item without `encrypted_content`"
        if problem is not None:
            raise malformed_answer(provider, _EXPECTED, problem, body, content_type)
    return resource
