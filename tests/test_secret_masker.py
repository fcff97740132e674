"""SecretMasker and SecretRegistry: masking known secrets by value (domain/secrets.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xrouter.domain.errors import InvalidRequest, UpstreamRateLimited
from xrouter.domain.secrets import MASK, MIN_SECRET_LENGTH, SecretMasker, SecretRegistry

KEY = "Zq9xT4mLr8Vb2Nc7Kd1Fh6Gj3Ps5Wy0Ua2Ie4Oo9"


def test_every_occurrence_of_every_secret_is_replaced() -> None:
    masker = SecretMasker([KEY, "token-of-another-shape"])
    text = f"{KEY} then token-of-another-shape, and {KEY}again"
    assert masker.mask(text) == f"{MASK} then {MASK}, and {MASK}again"


def test_short_and_empty_values_are_not_secrets() -> None:
    masker = SecretMasker(["", None, "abc", "x" * (MIN_SECRET_LENGTH - 1)])
    assert not masker
    assert masker.mask("abc xxxxxxx") == "abc xxxxxxx"


def test_a_secret_containing_another_is_masked_whole() -> None:
    inner = "abcdefgh12"
    outer = f"prefix-{inner}-suffix"
    masker = SecretMasker([inner, outer])
    assert masker.mask(f"[{outer}] [{inner}]") == f"[{MASK}] [{MASK}]"


def test_including_adds_request_tokens_without_changing_the_original() -> None:
    base = SecretMasker([KEY])
    with_token = base.including("client-token-123", None)
    assert with_token.mask("client-token-123 " + KEY) == f"{MASK} {MASK}"
    assert base.mask("client-token-123") == "client-token-123"
    assert base.including(None, "", "short") is base
    assert base.including(KEY) is base


def test_the_masker_is_immutable_and_its_repr_shows_no_value() -> None:
    masker = SecretMasker([KEY])
    with pytest.raises(AttributeError):
        masker._secrets = ()  # type: ignore[misc]
    assert KEY not in repr(masker)
    assert SecretMasker.empty().mask(KEY) == KEY


def test_mask_error_masks_message_param_and_code_in_place() -> None:
    error = InvalidRequest(f"bad key {KEY}", param=f"auth.{KEY}", code=KEY)
    masked = SecretMasker([KEY]).mask_error(error)
    assert masked is error
    assert (error.message, error.param, error.code) == (f"bad key {MASK}", f"auth.{MASK}", MASK)
    assert str(error) == f"bad key {MASK}"


def test_mask_error_keeps_everything_else() -> None:
    error = UpstreamRateLimited(f"slow down {KEY}", retry_after=3.0)
    SecretMasker([KEY]).mask_error(error)
    assert (error.status, error.code, error.retry_after) == (429, "rate_limit_exceeded", 3.0)
    assert error.param is None


def test_the_registry_live_masker_sees_tokens_learned_later() -> None:
    registry = SecretRegistry()
    live = registry.live()
    assert live and len(live) == 0  # kept by `masker or default`, though it knows nothing yet
    registry = SecretRegistry(SecretMasker([KEY]))
    live = registry.live()
    assert live.mask("access-token-1") == "access-token-1"
    registry.add("access-token-1")
    assert live.mask(f"access-token-1 {KEY}") == f"{MASK} {MASK}"
    assert live.including("client-token-9").mask("client-token-9 access-token-1") == (
        f"{MASK} {MASK}"
    )
    error = InvalidRequest("echo access-token-1")
    assert live.mask_error(error).message == f"echo {MASK}"


def test_the_registry_forgets_old_run_time_tokens_but_never_configured_ones() -> None:
    registry = SecretRegistry(SecretMasker([KEY]), keep=2)
    for n in range(5):
        registry.add(f"access-token-{n}")
    masker = registry.current
    assert masker.mask("access-token-0") == "access-token-0"
    assert masker.mask("access-token-3 access-token-4") == f"{MASK} {MASK}"
    assert masker.mask(KEY) == MASK


@given(
    # A "secret" made of asterisks could re-form next to a mask; no real key is.
    secret=st.text(
        st.characters(blacklist_characters="*"), min_size=MIN_SECRET_LENGTH, max_size=40
    ),
    before=st.text(max_size=30),
    after=st.text(max_size=30),
)
def test_a_secret_never_survives_masking(secret: str, before: str, after: str) -> None:
    assert secret not in SecretMasker([secret]).mask(before + secret + after)
