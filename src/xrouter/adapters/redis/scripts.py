"""Running a Lua script or one command on whichever client the process has for it.

SharedRedis (connection.py) holds two clients: redis-py's, which every Redis (plain or cluster)
gets and which routes a cluster's calls by their keys' slot, and, for a plain Redis only, the
lean client (resp.py), pipelined RESP connections that cost a command about a tenth of
redis-py's CPU. An operation goes on the lean client when there is one, else on redis-py's;
either way through SharedRedis's timeout and breaker, so a failure is `RedisUnavailable` and
each caller maps it to its own error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xrouter.adapters.redis.connection import RedisClient, SharedRedis
from xrouter.adapters.redis.resp import Arg, Lane, Script


class RedisScript:
    """A Lua script run by EVALSHA on either client; both load it again (SCRIPT LOAD) when
    Redis answers NOSCRIPT (a restart, SCRIPT FLUSH)."""

    __slots__ = ("_lean", "_redis", "_registered")

    def __init__(self, redis: SharedRedis, source: str) -> None:
        self._redis = redis
        self._lean = Script(source)
        self._registered = redis.client.register_script(source)

    async def run(self, what: str, keys: Sequence[str], args: Sequence[Arg] = ()) -> Any:
        """The script's reply; `what` names the call in SharedRedis's log lines and errors.
        Raises RedisUnavailable when Redis cannot answer."""
        redis = self._redis
        if redis.lean is not None:
            lean = self._lean

            async def on_lane(lane: Lane) -> Any:
                return await lean(lane, keys, args)

            return await redis.run_lean(what, on_lane)
        registered = self._registered

        async def on_client(client: RedisClient) -> Any:
            return await registered(keys=keys, args=args, client=client)

        return await redis.run(what, on_client)


async def run_command(redis: SharedRedis, what: str, *command: Arg) -> Any:
    """One plain command (`GET`, `DEL`) on either client, and its reply. Raises
    RedisUnavailable when Redis cannot answer."""
    if redis.lean is not None:

        async def on_lane(lane: Lane) -> Any:
            return await lane.execute(*command)

        return await redis.run_lean(what, on_lane)

    async def on_client(client: RedisClient) -> Any:
        return await client.execute_command(*command)

    return await redis.run(what, on_client)
