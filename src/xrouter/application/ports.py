"""The ports the application needs, as Protocols. Adapters implement them; tests fake them.

Nothing here imports a framework or an I/O library: that is the point of a port.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from msgspec import Struct, field

from xrouter.application.outcome import RequestOutcome
from xrouter.domain.compaction import CompactionResource
from xrouter.domain.conversations import Conversation
from xrouter.domain.events import StreamEvent
from xrouter.domain.keys import GatewayKey
from xrouter.domain.lifecycle import LifecycleEvent
from xrouter.domain.models import ModelInfo, ModelRoute
from xrouter.domain.provider_events import ProviderEvent
from xrouter.domain.responses import (
    InputItem,
    Response,
    ResponseRequest,
    StoredResponse,
)


class CallContext(Struct, frozen=True):
    """Per-request facts from the client's transport that providers may need.

    `client_token` is the client's bearer token, forwarded upstream only in BYOK mode;
    `traceparent` is the W3C trace context to propagate to upstreams.
    """

    client_token: str | None = None
    traceparent: str | None = None


class GenerationRequest(Struct, frozen=True):
    """What a provider is asked to do: the routed request with its full input.

    `items` is the whole conversation (turns from `previous_response_id` first, then this
    request's input); `request` carries the options (tools, temperature, text format...).
    `passthrough` holds client options the canonical request cannot express (Chat
    Completions' `stop`, `seed`, `logit_bias`...), for providers that understand them.
    """

    route: ModelRoute
    request: ResponseRequest
    items: list[InputItem]
    instructions: str | None
    passthrough: dict[str, Any] = field(default_factory=dict)
    context: CallContext = field(default_factory=CallContext)


class Provider(Protocol):
    """One upstream (or the built-in local provider)."""

    @property
    def name(self) -> str:
        """The provider prefix of public model ids: `local` in `local/echo`."""
        ...

    def knows_model(self, upstream_model: str) -> bool:
        """Whether `provider/<upstream_model>` may be routed here."""
        ...

    def static_models(self) -> list[ModelInfo]:
        """Models known without asking the upstream (built in, or configured)."""
        ...

    async def list_models(self) -> list[ModelInfo]:
        """Discovery: the models the upstream lists now (may do I/O, may fail)."""
        ...

    def stream(self, call: GenerationRequest) -> AsyncIterator[list[ProviderEvent]]:
        """Generate, yielding canonical deltas in batches, and `Finish` only when the upstream
        said it finished (a stream that ends without one is a failure); raise ProviderError /
        ProviderTimeout on failure. The engine may stop iterating early (then the stream's
        `aclose` is called).

        Each yielded list is a batch of deltas in order, never empty: what one upstream read
        produced (a fast upstream sends many events per read). One async step per batch, not
        per delta: the step through a generator was a visible share of the relay's CPU (issue
        16). The engine treats the deltas of a batch exactly as if they came one by one."""
        ...

    async def aclose(self) -> None:
        """Release what the provider holds (pooled connections); called once at shutdown."""
        ...


class TokenCounter(Protocol):
    async def count_input(self, instructions: str | None, items: Sequence[InputItem]) -> int:
        """Tokens of the instructions plus every input item (text, arguments, outputs)."""
        ...

    async def count_text(self, text: str) -> int:
        """Tokens of generated text, when the provider reports no usage."""
        ...


class ItemsPage(Struct, frozen=True):
    """A page of a stored response's input items, in the order asked for."""

    items: list[InputItem]
    has_more: bool


class UnknownItem(LookupError):
    """`after` names no input item of the response (ResponseStore.input_items)."""


class ResponseStore(Protocol):
    """Stored responses with their input items, kept for the configured time to live.

    Every method raises `StorageUnavailable` (domain/errors.py) when the backend cannot
    answer now; callers that need no answer (saving a response already delivered) log it.

    Ownership: a response belongs to `StoredResponse.owner`. The readers and `delete` take
    the caller's key id as `owner`: None (authentication off) makes no check; any other value
    treats a response owned by someone else, or by nobody (stored with owner None), exactly
    as an unknown one (None / False, nothing deleted), so no caller can learn that another
    key's response exists.
    """

    async def save(self, stored: StoredResponse) -> bool:
        """Store `stored`; False when it was not stored because it is over the record size
        limit (the store has logged which setting acted)."""
        ...

    async def get(self, response_id: str, *, owner: str | None = None) -> StoredResponse | None:
        """The response with every input item, or None when unknown, expired or not
        `owner`'s."""
        ...

    async def get_response(self, response_id: str, *, owner: str | None = None) -> Response | None:
        """The response without its input items (retrieve does not need them); None as for
        `get`."""
        ...

    async def input_items(
        self,
        response_id: str,
        *,
        after: str | None,
        limit: int,
        order: Literal["asc", "desc"],
        owner: str | None = None,
    ) -> ItemsPage | None:
        """Up to `limit` input items after the item `after` (exclusive), in `order`; None
        when the response is unknown or not `owner`'s. Raises UnknownItem when `after` is not
        an item of it.
        A long list is paged without reading every item."""
        ...

    async def delete(self, response_id: str, *, owner: str | None = None) -> bool:
        """True when something was deleted; another owner's response is left alone (False),
        checked atomically with the delete."""
        ...

    async def aclose(self) -> None:
        """Release connections; called once at shutdown."""
        ...


class ConversationFull(Exception):
    """Appending would take a conversation past the item limit it was given
    (ConversationStore.append); `count` is how many items it holds now."""

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.count = count


class DuplicateItem(Exception):
    """An appended item's id is already an item of the conversation (ConversationStore)."""


class ConversationStore(Protocol):
    """Conversations (domain/conversations.py) and their items, in order, kept for the
    configured time to live after their last write.

    Every method raises `StorageUnavailable` when the backend cannot answer now. Ownership
    works as in ResponseStore: the caller's key id as `owner` (None: no check); another
    owner's conversation is answered exactly as an unknown one and is left untouched. Items
    come with their ids already given (unique within the conversation); the store keeps
    them as they are.
    """

    async def create(
        self, conversation: Conversation, items: list[InputItem], *, owner: str | None
    ) -> None: ...

    async def get(self, conversation_id: str, *, owner: str | None = None) -> Conversation | None:
        """The conversation without its items; None when unknown, expired or not `owner`'s."""
        ...

    async def set_metadata(
        self, conversation_id: str, metadata: dict[str, str], *, owner: str | None = None
    ) -> Conversation | None:
        """Replace its metadata; the updated conversation, or None as for `get`."""
        ...

    async def delete(self, conversation_id: str, *, owner: str | None = None) -> bool:
        """True when it was deleted with its items (checked atomically with the owner)."""
        ...

    async def append(
        self,
        conversation_id: str,
        items: list[InputItem],
        *,
        max_items: int,
        owner: str | None = None,
    ) -> bool:
        """Add `items` at the end, all or none; False when the conversation is unknown.
        Raises ConversationFull when it would then hold more than `max_items`, DuplicateItem
        when an id is already there."""
        ...

    async def items(
        self,
        conversation_id: str,
        *,
        after: str | None,
        limit: int,
        order: Literal["asc", "desc"],
        owner: str | None = None,
    ) -> ItemsPage | None:
        """Up to `limit` items after the item `after` (exclusive), in `order`; None when the
        conversation is unknown. Raises UnknownItem when `after` is not one of its items."""
        ...

    async def all_items(
        self, conversation_id: str, *, owner: str | None = None
    ) -> list[InputItem] | None:
        """Every item, oldest first (the history of a response that continues it)."""
        ...

    async def get_item(
        self, conversation_id: str, item_id: str, *, owner: str | None = None
    ) -> InputItem | None:
        """One item; None when the conversation is unknown, UnknownItem when the item is."""
        ...

    async def delete_item(
        self, conversation_id: str, item_id: str, *, owner: str | None = None
    ) -> Conversation | None:
        """Remove one item; the conversation, None when it is unknown, UnknownItem when the
        item is."""
        ...

    async def aclose(self) -> None: ...


class EventLog(Protocol):
    """The stream events of background responses, kept for replay and following
    (`GET /v1/responses/{id}?stream=true&starting_after=N`) by any worker or instance that
    shares the log.

    Bounded per response (events and bytes: past either bound, events are dropped, except a
    terminal one, so a follower still sees the end) and expiring. Every method raises
    `StorageUnavailable` when the backend cannot answer now.
    """

    async def append(self, response_id: str, events: Sequence[StreamEvent]) -> None:
        """Add events (in sequence order) to the response's log, creating it."""
        ...

    async def read(self, response_id: str, *, after: int, limit: int) -> list[StreamEvent] | None:
        """Up to `limit` events whose `sequence_number` is greater than `after`, in order; None
        when the response has no log (never a background one here, or expired)."""
        ...

    async def wait(self, response_id: str, *, after: int, timeout_s: float) -> None:
        """Return when events after `after` may have arrived, or after `timeout_s` at most
        (a follower then reads again)."""
        ...


class CancelRequests(Protocol):
    """Cancellations of background responses, seen by whichever worker is generating one."""

    async def request(self, response_id: str) -> None:
        """Ask for `response_id` to be cancelled (kept for a bounded time)."""
        ...

    async def requested(self, response_id: str) -> bool:
        """Whether a cancellation of `response_id` was asked for."""
        ...


class Clock(Protocol):
    def now(self) -> float:
        """Unix time in seconds."""
        ...

    def monotonic_ns(self) -> int: ...


class IdGenerator(Protocol):
    def new_id(self, prefix: str) -> str:
        """A fresh, unguessable id such as `resp_…`; `prefix` is given without the `_`."""
        ...


class LifecycleListener(Protocol):
    """Receives every lifecycle step (formal/trace-schema.md). Called on the request path:
    implementations must be quick and must not raise."""

    enabled: bool

    def on_event(self, event: LifecycleEvent) -> None: ...


class OutcomeSink(Protocol):
    """Where each request's terminal state goes (metrics, the server span, analytics, usage):
    once per request that reached done or failed, at any stage. Called on the request path:
    implementations count or queue, they never block and never raise."""

    def record(self, outcome: RequestOutcome) -> None: ...


class ModelCatalog(Protocol):
    """Resolves public model ids to routes and lists the models on offer."""

    async def resolve(self, model: str) -> tuple[ModelRoute, Provider]:
        """Raise ModelNotFound when no provider serves `model`."""
        ...

    async def list_models(self) -> list[ModelInfo]: ...


class CachedModels(Struct, frozen=True):
    """A provider's model list as discovery last found it, shared by every worker."""

    models: list[ModelInfo]
    fresh_for_s: float
    """Seconds the list is still fresh; zero or less: a refresh is due (the list is still
    the best known one, kept a little past its freshness so readers never see a gap)."""


class CacheUnavailable(Exception):
    """The discovery cache cannot answer now (its backend is down or too slow); the message
    says why and never carries a password."""


class DiscoveryCache(Protocol):
    """Model discovery results shared across workers and instances, and the lock that lets
    one of them at a time refresh a provider's list. Every method raises CacheUnavailable
    when the backend cannot answer now."""

    @property
    def shared(self) -> bool:
        """False for the process-local implementation: nothing is shared, so the registry
        discovers by itself exactly as a single process does."""
        ...

    async def read(self, provider: str) -> CachedModels | None:
        """The cached list of `provider`, or None when there is none (or it expired)."""
        ...

    async def write(self, provider: str, models: list[ModelInfo], fresh_s: float) -> None:
        """Cache `models`, fresh for `fresh_s` seconds (kept a margin longer)."""
        ...

    async def try_lock(self, provider: str, ttl_s: float) -> bool:
        """Take `provider`'s refresh lock for at most `ttl_s` seconds; False when another
        worker holds it. The lock expires by itself if its holder dies."""
        ...

    async def release(self, provider: str) -> None:
        """Release the lock this process holds on `provider` (never another's)."""
        ...


class KeyStore(Protocol):
    """Gateway keys (domain/keys.py), found by the hash of their secret. Every method raises
    `StorageUnavailable` when the backend cannot answer now."""

    @property
    def writable(self) -> bool:
        """False for a read-only store (the TOML file as the server reads it)."""
        ...

    async def find(self, key_hash: str) -> GatewayKey | None:
        """The key whose secret hashes to `key_hash` (revoked and expired ones included: the
        caller decides), or None."""
        ...

    async def get(self, key_id: str) -> GatewayKey | None: ...

    async def list_keys(self) -> list[GatewayKey]:
        """Every key, oldest first."""
        ...

    async def save(self, key: GatewayKey, *, replaces_hash: str | None = None) -> None:
        """Create or update `key` (by id). `replaces_hash`: the hash the key had before a
        rotation, which must stop authenticating at once."""
        ...

    async def start(self) -> None:
        """Begin the store's background work, if it has any (the server calls it once at
        startup; a command-line use never does): the Redis store's per-process cache of keys
        listens for changes from here on."""
        ...

    async def aclose(self) -> None: ...


class KeyHasher(Protocol):
    def hash(self, secret: str) -> str:
        """The keyed hash (hex) the store indexes keys by; the same secret, the same hash."""
        ...


class RateState(Struct, frozen=True, kw_only=True):
    """A limited key's standing after this request, for the x-ratelimit-* headers. None:
    that kind of limit is not set on the key."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None


class KeyAdmission(Struct, frozen=True, kw_only=True):
    """What `KeyLimiter.admit` decided."""

    allowed: bool
    state: RateState
    refused_by: str | None = None
    """The limit that refused: `requests_per_minute`, `tokens_per_minute` or `concurrent`."""
    retry_after_s: float | None = None
    lease: str | None = None
    """The concurrency lease to release when the request ends (None: no such limit)."""


class KeyLimiter(Protocol):
    """Per-key limits, exact under concurrency: N parallel requests against a limit of K
    never admit more than K (shared by every worker and instance when on Redis)."""

    async def admit(self, key: GatewayKey) -> KeyAdmission:
        """Count one request against the key's requests-per-minute, check its tokens in this
        minute against tokens-per-minute, take a concurrency lease; all or nothing. A refusal
        takes nothing. Raises `StorageUnavailable` when the backend cannot answer."""
        ...

    async def charge_tokens(self, key: GatewayKey, tokens: int) -> None:
        """Add `tokens` to the key's current minute (input at tokenize, output at the end).
        Never refuses: the check was at admission."""
        ...

    def release(self, key: GatewayKey, lease: str) -> None:
        """Give back a concurrency lease. Never blocks and never raises (it runs when a
        request ends, cancelled ones included)."""
        ...

    async def aclose(self) -> None: ...


class ItemSealer(Protocol):
    """Authenticated encryption for what the gateway hands a client to give back later (the
    `encrypted_content` of its compaction items): only this gateway's key opens it, and any
    change to it is detected. Pure computation: no I/O, never blocks."""

    def seal(self, plaintext: bytes) -> str:
        """`plaintext` sealed, as printable text carrying this sealer's format marker."""
        ...

    def recognizes(self, token: str) -> bool:
        """Whether `token` carries this sealer's format marker (it may still fail to open);
        False for another party's opaque content (a Responses upstream's own)."""
        ...

    def open(self, token: str) -> bytes | None:
        """The plaintext, or None when `token` was changed, truncated, or sealed with another
        key (another deployment, a rotated key, a restarted process without a fixed key)."""
        ...


class CompactCall(Struct, frozen=True):
    """A compaction passed through to an upstream that compacts natively: the window as the
    gateway holds it (history first, XRouter's own compaction items already expanded)."""

    route: ModelRoute
    items: list[InputItem]
    instructions: str | None = None
    prompt_cache_key: str | None = None
    context: CallContext = field(default_factory=CallContext)


@runtime_checkable
class NativeCompaction(Protocol):
    """A provider whose upstream has `POST /responses/compact` (a Responses API server).
    Compaction is passed through to it, and its own compaction items go back to it as they
    came, never opened by the gateway."""

    @property
    def compacts_natively(self) -> bool:
        """False when this upstream speaks another protocol (Chat Completions) or has no
        compaction endpoint even though it speaks Responses."""
        ...

    async def compact(self, call: CompactCall) -> CompactionResource:
        """The upstream's compacted window, checked to be one (ProviderError otherwise)."""
        ...
