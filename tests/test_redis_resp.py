"""The lean RESP client (adapters/redis/resp.py) against a real redis-server: pipelined callers
get their own replies, error replies raise redis-py's classes, a cancelled caller does not
shift the replies behind it, a lost connection fails its callers and the next call
reconnects, AUTH / SELECT / unix sockets / TLS connect, scripts survive a Redis restart, and
multi-MB values round-trip."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest
import trustme
from redis.exceptions import AuthenticationError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.redis_servers import RedisServer
from xrouter.adapters.redis.connection import RedisSettings, RedisUnavailable, SharedRedis
from xrouter.adapters.redis.resp import RespClient, Script, endpoint_from_url


def _client(url: str, connections: int = 1, timeout_s: float = 2.0) -> RespClient:
    endpoint = endpoint_from_url(url)
    assert endpoint is not None
    return RespClient(endpoint, connections=connections, connect_timeout_s=timeout_s)


def _connected_clients(server: RedisServer) -> int:
    info = server.cli("INFO", "clients")
    line = next(line for line in info.splitlines() if line.startswith("connected_clients:"))
    return int(line.split(":")[1]) - 1  # redis-cli itself


async def test_concurrent_callers_share_one_connection_and_get_their_own_replies(
    redis_factory: Callable[..., RedisServer],
) -> None:
    # A server of its own: the session's may still hold other tests' connections.
    redis_server = redis_factory()
    client = _client(redis_server.url, connections=1)
    replies = await asyncio.gather(
        *(client.execute("ECHO", f"caller {index}") for index in range(3000)),
        *(client.execute("INCR", "counter") for _ in range(500)),
    )
    assert replies[:3000] == [f"caller {index}".encode() for index in range(3000)]
    assert sorted(replies[3000:]) == list(range(1, 501))
    assert _connected_clients(redis_server) == 1
    await client.aclose()


async def test_lanes_are_used_round_robin(redis_factory: Callable[..., RedisServer]) -> None:
    redis_server = redis_factory()
    client = _client(redis_server.url, connections=3)
    assert await asyncio.gather(*(client.execute("PING") for _ in range(6))) == [b"PONG"] * 6
    assert _connected_clients(redis_server) == 3
    await client.aclose()


async def test_error_replies_raise_redis_py_classes_and_do_not_shift_replies(
    redis_server: RedisServer,
) -> None:
    client = _client(redis_server.url)
    await client.execute("RPUSH", "a-list", b"x")
    results = await asyncio.gather(
        client.execute("GET", "a-list"),  # WRONGTYPE
        client.execute("ECHO", "one"),
        client.execute("EVALSHA", "0" * 40, 0),  # NOSCRIPT
        client.execute("NO-SUCH-COMMAND"),
        client.execute("ECHO", "two"),
        return_exceptions=True,
    )
    assert type(results[0]) is ResponseError
    assert "WRONGTYPE" in str(results[0])
    assert results[1] == b"one"
    assert type(results[2]) is NoScriptError
    assert type(results[3]) is ResponseError
    assert results[4] == b"two"
    # Nested replies, integers and nil come through as redis-py's do (bytes, int, None).
    assert await client.execute("EVAL", "return {1, 'a', false}", 0) == [1, b"a", None]
    assert await client.execute("GET", "missing") is None
    await client.aclose()


async def test_a_cancelled_caller_leaves_its_reply_to_be_dropped(
    redis_server: RedisServer,
) -> None:
    client = _client(redis_server.url)
    lane = client.lane()
    # BLPOP holds the connection for 0.3 s; the commands behind it wait for its reply.
    blocked = asyncio.create_task(lane.execute("BLPOP", "empty-list", 0.3))
    behind = [asyncio.create_task(lane.execute("ECHO", f"behind {index}")) for index in range(3)]
    await asyncio.sleep(0.05)
    blocked.cancel()
    behind[1].cancel()
    after = await lane.execute("ECHO", "after")
    assert after == b"after"  # not BLPOP's nil, nor a reply meant for another caller
    assert await behind[0] == b"behind 0"
    assert await behind[2] == b"behind 2"
    with pytest.raises(asyncio.CancelledError):
        await behind[1]
    await client.aclose()


async def test_a_killed_redis_fails_waiting_callers_and_the_next_call_reconnects(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    client = _client(server.url)
    assert await client.execute("SET", "k", b"v")
    waiting = asyncio.create_task(client.execute("BLPOP", "empty-list", 5))
    await asyncio.sleep(0.05)
    server.kill()
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(waiting, 2)
    with pytest.raises((RedisConnectionError, OSError)):
        await client.execute("PING")  # refused: nothing listens
    server.start()
    assert await client.execute("PING") == b"PONG"
    await client.aclose()


async def test_a_script_is_loaded_again_after_a_restart(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    client = _client(server.url)
    script = Script("return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}")
    assert await script(client.lane(), ["key"], [b"value", 41]) == [b"key", b"value", 42]
    server.restart()  # the script cache is gone: EVALSHA answers NOSCRIPT
    with pytest.raises(RedisConnectionError):
        await client.execute("PING")  # the old connection is dead
    assert await script(client.lane(), ["key"], ["again", 1]) == [b"key", b"again", 2]
    assert server.cli("SCRIPT", "EXISTS", script.sha) == "1"
    await client.aclose()


async def test_auth_with_a_url_encoded_password(
    redis_factory: Callable[..., RedisServer],
) -> None:
    password = "p@ss w/rd:%"
    server = redis_factory("--requirepass", password)
    base = f"127.0.0.1:{server.port}/0"
    client = _client(f"redis://:{quote(password, safe='')}@{base}")
    assert await client.execute("PING") == b"PONG"
    await client.aclose()
    with_user = _client(f"redis://default:{quote(password, safe='')}@{base}")
    assert await with_user.execute("PING") == b"PONG"
    await with_user.aclose()
    wrong = _client(f"redis://:wrong@{base}")
    with pytest.raises(AuthenticationError):
        await wrong.execute("PING")
    await wrong.aclose()
    endpoint = endpoint_from_url(f"redis://:{quote(password, safe='')}@{base}")
    assert password not in repr(endpoint) and "***" in repr(endpoint)
    assert password not in repr(client)


async def test_select_a_database(redis_server: RedisServer) -> None:
    client = _client(f"redis://127.0.0.1:{redis_server.port}/3")
    await client.execute("SET", "in-db-3", b"yes")
    assert redis_server.cli("-n", "3", "GET", "in-db-3") == "yes"
    assert redis_server.cli("GET", "in-db-3") == ""
    await client.aclose()


async def test_a_unix_socket(redis_factory: Callable[..., RedisServer], tmp_path: Path) -> None:
    path = tmp_path / "redis.sock"
    redis_factory("--unixsocket", str(path), "--unixsocketperm", "700")
    client = _client(f"unix://{path}?db=2")
    await client.execute("SET", "over-unix", b"1")
    assert await client.execute("GET", "over-unix") == b"1"
    await client.aclose()


async def test_multi_megabyte_values_round_trip_beside_small_commands(
    redis_server: RedisServer,
) -> None:
    client = _client(redis_server.url, connections=1)
    big = bytes(range(256)) * (6 * 1024 * 1024 // 256)  # 6 MiB, every byte value
    results = await asyncio.gather(
        client.execute("SET", "big", big),
        *(client.execute("ECHO", str(index)) for index in range(50)),
        client.execute("GET", "big"),
        client.execute("STRLEN", "big"),
    )
    assert results[0] == b"OK"
    assert results[1:51] == [str(index).encode() for index in range(50)]
    assert results[51] == big
    assert results[52] == len(big)
    await client.aclose()


async def test_a_connect_is_bounded_by_its_timeout(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    server.pause()  # the kernel accepts the TCP connection; nobody answers SELECT
    client = _client(f"redis://127.0.0.1:{server.port}/1", timeout_s=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await client.execute("PING")
    assert loop.time() - started < 1.0
    server.resume()
    assert await client.execute("PING") == b"PONG"
    await client.aclose()


async def test_shared_redis_drops_a_lane_that_timed_out(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    redis = SharedRedis(RedisSettings(server.url, timeout_s=0.2, breaker_s=0.3, pool_size=1))
    assert redis.lean is not None
    before = await redis.run_lean("identify", lambda lane: lane.execute("CLIENT", "ID"))
    server.pause()
    with pytest.raises(RedisUnavailable, match=r"no answer within 0\.2 s"):
        await redis.run_lean("echo", lambda lane: lane.execute("ECHO", "lost"))
    server.resume()
    await asyncio.sleep(0.35)  # the breaker's period; the next call probes on a new connection
    assert await redis.run_lean("echo", lambda lane: lane.execute("ECHO", "next")) == b"next"
    after = await redis.run_lean("identify", lambda lane: lane.execute("CLIENT", "ID"))
    assert after != before
    assert _connected_clients(server) == 1  # the timed-out connection was closed
    await redis.aclose()


async def test_the_lean_client_is_built_only_where_it_applies() -> None:
    assert SharedRedis(RedisSettings("redis://127.0.0.1:1/0")).lean is not None
    assert SharedRedis(RedisSettings("redis://127.0.0.1:1/0", cluster=True)).lean is None
    # Options only redis-py understands keep everything on redis-py.
    assert endpoint_from_url("rediss://127.0.0.1:1/0?ssl_cert_reqs=none") is None
    assert endpoint_from_url("redis://127.0.0.1:1/0?db=4") is not None


async def test_tls_with_a_ca_file(
    redis_factory: Callable[..., RedisServer], tmp_path: Path
) -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = (tmp_path / name for name in ("ca.pem", "cert.pem", "key.pem"))
    authority.cert_pem.write_to_path(str(ca_file))
    certificate.cert_chain_pems[0].write_to_path(str(cert_file))
    certificate.private_key_pem.write_to_path(str(key_file))
    tls_port = _free_tls_port()
    server = redis_factory(
        "--tls-port", str(tls_port), "--tls-cert-file", str(cert_file),
        "--tls-key-file", str(key_file), "--tls-ca-cert-file", str(ca_file),
        "--tls-auth-clients", "no",
    )  # fmt: skip
    del server
    endpoint = endpoint_from_url(f"rediss://localhost:{tls_port}/0", str(ca_file))
    assert endpoint is not None and endpoint.tls
    client = RespClient(endpoint, connections=1, connect_timeout_s=2.0)
    assert await client.execute("ECHO", "over tls") == b"over tls"
    await client.aclose()
    untrusted = endpoint_from_url(f"rediss://localhost:{tls_port}/0")  # the system's CAs
    assert untrusted is not None
    refused = RespClient(untrusted, connections=1, connect_timeout_s=2.0)
    with pytest.raises(OSError):  # ssl.SSLCertVerificationError
        await refused.execute("PING")
    await refused.aclose()


def _free_tls_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
