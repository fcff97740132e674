"""The seal on the gateway's compaction items: what opens it, what does not, and whose it is.

The sealer is checked through its port (`ItemSealer`) and the items through the live gateway
with gateway keys on: an item belongs to the key that compacted.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import httpx
import msgspec
import pytest

from tests.conftest import LiveServer, make_container
from tests.test_access_control import SECRET, Keys
from xrouter.adapters.crypto.sealer import MARKER, AeadSealer, hkdf_sha256
from xrouter.application.compaction_items import CompactionItems, SealedSummary
from xrouter.application.ports import ItemSealer
from xrouter.domain.errors import InvalidRequest
from xrouter.domain.responses import InputItem
from xrouter.entrypoints.compaction_config import build_compaction_items
from xrouter.entrypoints.config import ConfigError, Settings

WINDOW = [{"role": "user", "content": "Remember the code word: slate."}]


def raw(token: str) -> bytearray:
    body = token[len(MARKER) :]
    return bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def token_of(data: bytes) -> str:
    return MARKER + base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_a_sealed_item_opens_with_the_same_secret_only() -> None:
    sealer: ItemSealer = AeadSealer.from_secret("one secret of enough length")
    token = sealer.seal(b"the summary")

    assert sealer.recognizes(token)
    assert b"summary" not in raw(token)
    assert AeadSealer.from_secret("one secret of enough length").open(token) == b"the summary"
    assert AeadSealer.from_secret("another secret of enough len").open(token) is None
    assert AeadSealer.ephemeral().open(token) is None
    # The same plaintext never seals the same way twice (a fresh nonce each time).
    assert sealer.seal(b"the summary") != token


def test_every_changed_byte_and_the_version_byte_are_detected() -> None:
    sealer = AeadSealer.from_secret("one secret of enough length")
    data = raw(sealer.seal(b"the summary"))
    for index in range(len(data)):
        changed = bytearray(data)
        changed[index] ^= 0x01
        assert sealer.open(token_of(bytes(changed))) is None, index
    assert sealer.open(token_of(bytes(data[:-1]))) is None  # truncated
    assert sealer.open(token_of(bytes(data))) == b"the summary"


@pytest.mark.parametrize("token", ["", "xrc_", "xrc_%%%", "gAAAAA-openai-style", "xrc_AA"])
def test_garbage_never_opens_and_foreign_content_is_not_recognised(token: str) -> None:
    sealer = AeadSealer.from_secret("one secret of enough length")
    assert sealer.open(token) is None
    assert sealer.recognizes(token) == token.startswith(MARKER)


def test_a_compaction_item_belongs_to_the_key_that_made_it(
    serve_with: Callable[..., LiveServer],
) -> None:
    container = make_container(
        discovery=False, auth="keys", auth_secret=SECRET, compaction_key="c" * 32
    )
    server = serve_with(container=container)
    keys = Keys(server)
    alice, bob = keys.add("alice"), keys.add("bob")

    def post(key: str, path: str, body: object) -> httpx.Response:
        return httpx.post(
            server.base_url + path, json=body, headers={"authorization": f"Bearer {key}"}
        )

    anonymous = httpx.post(
        server.base_url + "/v1/responses/compact", json={"model": "local/echo", "input": "x"}
    )
    assert anonymous.status_code == 401
    made = post(alice, "/v1/responses/compact", {"model": "local/echo", "input": WINDOW})
    assert made.status_code == 200, made.text
    item = made.json()["output"][0]

    body = {"model": "local/echo", "input": [item]}
    assert post(alice, "/v1/responses", body).status_code == 200
    refused = post(bob, "/v1/responses", body)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "input[0]"
    assert "could not be verified" in refused.json()["error"]["message"]


def test_the_key_setting_is_refused_when_short() -> None:
    with pytest.raises(ConfigError, match="XR_COMPACTION_KEY is 5 characters long"):
        Settings.from_env({"XR_COMPACTION_KEY": "short"})


def test_without_a_compaction_key_the_auth_secret_gives_every_process_one_key() -> None:
    """No XR_COMPACTION_KEY: a keyed gateway's workers and instances share XR_AUTH_SECRET, and
    the key derived from it opens what any of them sealed; with neither secret, a process's
    random key opens only its own items."""

    def built(**values: str) -> CompactionItems:
        return build_compaction_items(Settings(**values))

    summary = SealedSummary(summary="the gist", owner=None, model="local/echo", created_at=0)

    def item(token: str) -> list[InputItem]:
        return [
            msgspec.convert(
                {"type": "compaction", "id": "cmp_1", "encrypted_content": token}, InputItem
            )
        ]

    shared = built(auth_secret=SECRET).seal(summary)
    opened = built(auth_secret=SECRET).expand(item(shared), own_from=0, owner=None, provider=None)
    assert opened[0].type == "message" and "the gist" in msgspec.json.encode(opened[0]).decode()
    with pytest.raises(InvalidRequest, match="could not be verified"):
        built().expand(item(built().seal(summary)), own_from=0, owner=None, provider=None)


@pytest.mark.parametrize("secret", ["one secret of enough length", "ключ", "x" * 200])
def test_the_key_is_cryptographys_hkdf_of_the_secret(secret: str) -> None:
    # Derived with the standard library (cryptography is imported at the first seal only):
    # the same key as cryptography's HKDF, so tokens sealed before still open.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    info = b"xrouter compaction item key v1"
    expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info)
    assert hkdf_sha256(secret.encode(), info) == expected.derive(secret.encode())
