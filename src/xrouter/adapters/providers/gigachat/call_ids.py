"""Call ids for GigaChat function calls, which have none.

GigaChat correlates a call and its result by position and by an optional `functions_state_id`
that must come back on the assistant message in history. Canonical clients correlate by
`call_id` and are often stateless (they resend the whole conversation), so the state id rides
inside the call id: `call_gc<12 hex>_<functions_state_id>`. Whatever path the conversation takes
back to us (a stateless client's replay, `previous_response_id`, a Chat Completions client's
`tool_call_id`), the call item carries the state id and nothing has to be remembered here.

The random part keeps ids unique even when GigaChat reuses one state id over several turns
(the state belongs to the conversation, not to one call), so a client matching results to calls
by id never sees two calls with the same id. A call without a state id gets a plain
`call_<24 hex>`. Ids from other providers never match the pattern, so they carry no state.
"""

from __future__ import annotations

import re
import secrets

_WITH_STATE = re.compile(r"call_gc[0-9a-f]{12}_([A-Za-z0-9._:-]{1,128})")
_SAFE_STATE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def new_call_id(functions_state_id: str | None) -> str:
    """A fresh call id, carrying `functions_state_id` when there is one."""
    if functions_state_id and _SAFE_STATE.fullmatch(functions_state_id):
        return f"call_gc{secrets.token_hex(6)}_{functions_state_id}"
    return f"call_{secrets.token_hex(12)}"


def state_id_of(call_id: str | None) -> str | None:
    """The `functions_state_id` a call id made by `new_call_id` carries, else None."""
    if not call_id:
        return None
    match = _WITH_STATE.fullmatch(call_id)
    return match.group(1) if match else None
