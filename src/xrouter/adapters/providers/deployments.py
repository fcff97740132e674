"""Several deployments (base URL, key, weight) behind one provider name, and which one the
next attempt goes to.

`DeploymentSelector` holds the choice and the cooldowns; the transport asks it for a
deployment before each attempt (a retry after a failure goes to another deployment when one
is up) and reports back how the attempt went. Strategies: `least_inflight` (default: the
fewest calls open now, ties in turn), `weighted` (random in proportion to `weight`),
`latency` (the lowest moving average of the time to the answer's head, times the calls open
there plus one; one never measured is tried first). A deployment whose attempt failed
(connect error, 429, 5xx) is skipped for `cooldown_s`, and the call's next attempt avoids it
even without a cooldown; when all are cooling down, the call fails at once with the last
error.

The state is this process's own: every worker counts its own in-flight calls, latencies
and cooldowns (nothing is shared through Redis). Time comes from an injected clock.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

Strategy = Literal["least_inflight", "weighted", "latency"]
STRATEGIES: tuple[Strategy, ...] = ("least_inflight", "weighted", "latency")
LATENCY_SMOOTHING = 0.3
"""Weight of the newest sample in the latency moving average."""


@dataclass(frozen=True, slots=True)
class Deployment:
    """One place a provider is served from."""

    base_url: str
    api_key: str | None = None
    """Replaces the provider's key on calls sent here; None keeps the provider's."""
    weight: float = 1.0
    """Share of the traffic under the `weighted` strategy."""

    def __post_init__(self) -> None:
        if not self.base_url:
            raise ValueError("a deployment needs a base_url")
        if not self.weight > 0:
            raise ValueError(f"a deployment's weight must be above 0, not {self.weight}")

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        key = "***" if self.api_key else None
        return f"Deployment(base_url={self.base_url!r}, api_key={key!r}, weight={self.weight!r})"


class DeploymentSelector:
    """Chooses a deployment per attempt and keeps each one's in-flight count, latency and
    cooldown."""

    __slots__ = (
        "_clock",
        "_cooldown_s",
        "_down_until",
        "_inflight",
        "_last_error",
        "_latency",
        "_next",
        "_rng",
        "_strategy",
        "deployments",
    )

    def __init__(
        self,
        deployments: Sequence[Deployment],
        *,
        strategy: Strategy = "least_inflight",
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not deployments:
            raise ValueError("a deployment selector needs at least one deployment")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
        self.deployments = tuple(deployments)
        count = len(self.deployments)
        self._strategy = strategy
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._rng = rng or random.Random()
        self._inflight = [0] * count
        self._latency: list[float | None] = [None] * count
        self._down_until = [0.0] * count
        self._last_error: BaseException | None = None
        self._next = 0

    def inflight(self, index: int) -> int:
        """Calls open now to deployment `index` (in this process)."""
        return self._inflight[index]

    def is_up(self, index: int) -> bool:
        return self._down_until[index] <= self._clock()

    def any_up(self) -> bool:
        """Whether some deployment may take an attempt now."""
        now = self._clock()
        return any(until <= now for until in self._down_until)

    @property
    def last_error(self) -> BaseException | None:
        """The error of the most recent failed attempt, whichever deployment it was."""
        return self._last_error

    def pick(self, avoid: int | None = None) -> int | None:
        """The deployment for the next attempt, or None when all are cooling down. `avoid`
        (the one that just failed) is taken only when no other is up."""
        now = self._clock()
        up = [i for i, until in enumerate(self._down_until) if until <= now]
        if avoid is not None and len(up) > 1 and avoid in up:
            up.remove(avoid)
        if not up:
            return None
        if len(up) == 1:
            return up[0]
        if self._strategy == "weighted":
            weights = [self.deployments[i].weight for i in up]
            return self._rng.choices(up, weights)[0]
        if self._strategy == "latency":
            # The expected wait: the average grows only when a deployment is called, so
            # without the open calls a busy fast one would keep all the traffic and one whose
            # average rose in a slow spell would never be measured again. Never measured
            # counts as fastest, so each deployment gets tried.
            cost = {i: (self._latency[i] or 0.0) * (self._inflight[i] + 1) for i in up}
            best = min(cost.values())
            candidates = [i for i in up if cost[i] == best]
        else:
            least = min(self._inflight[i] for i in up)
            candidates = [i for i in up if self._inflight[i] == least]
        return self._in_turn(candidates)

    def started(self, index: int) -> None:
        """An attempt to `index` began (call `ended` exactly once after)."""
        self._inflight[index] += 1

    def ended(self, index: int) -> None:
        """The attempt's response is closed (or it never got one)."""
        self._inflight[index] -= 1

    def succeeded(self, index: int, latency_s: float) -> None:
        """`index` answered, its head after `latency_s`: it is up again, its latency averaged."""
        self._down_until[index] = 0.0
        previous = self._latency[index]
        self._latency[index] = (
            latency_s if previous is None else previous + LATENCY_SMOOTHING * (latency_s - previous)
        )

    def failed(self, index: int, error: BaseException) -> None:
        """`index` failed (connect error, 429, 5xx): skipped for `cooldown_s`."""
        self._down_until[index] = self._clock() + self._cooldown_s
        self._last_error = error

    def _in_turn(self, candidates: list[int]) -> int:
        """The first candidate at or after the rotating cursor, so ties take turns."""
        count = len(self.deployments)
        chosen = min(candidates, key=lambda i: (i - self._next) % count)
        self._next = (chosen + 1) % count
        return chosen
