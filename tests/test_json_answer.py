"""JsonAnswer (entrypoints/http/json_answer.py) answers exactly as Litestar's own Response of the
same JSON body, and keeps what a route declares (headers, cookies, a background task)."""

from __future__ import annotations

from litestar import Litestar, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import Cookie, ResponseHeader
from litestar.testing import TestClient

from xrouter.entrypoints.http.json_answer import JsonAnswer

BODY = b'{"id":"resp_1","status":"completed"}'
ran: list[str] = []


@post("/litestar", status_code=200)
async def litestar_answer() -> Response[bytes]:
    return Response(BODY, status_code=200, media_type="application/json")


@post("/ours", status_code=200)
async def our_answer() -> Response[bytes]:
    return JsonAnswer(BODY)


@get("/missing")
async def missing() -> Response[bytes]:
    return JsonAnswer(b'{"error":{}}', 404)


@get(
    "/declared",
    response_headers=[ResponseHeader(name="x-route", value="yes")],
    response_cookies=[Cookie(key="k", value="v")],
    background=BackgroundTask(lambda: ran.append("background")),
)
async def declared() -> Response[bytes]:
    return JsonAnswer(BODY)


def test_the_answer_is_litestars_own() -> None:
    # logging_config=None: Litestar's default would replace the root logger's handlers (the
    # session's log audit among them), as the gateway's own app says.
    app = Litestar([litestar_answer, our_answer, missing, declared], logging_config=None)
    with TestClient(app) as client:
        theirs = client.post("/litestar")
        ours = client.post("/ours")
        assert (
            (ours.status_code, ours.content) == (theirs.status_code, theirs.content) == (200, BODY)
        )
        assert ours.headers.multi_items() == theirs.headers.multi_items()
        assert ours.headers["content-type"] == "application/json"
        assert ours.headers["content-length"] == str(len(BODY))

        not_found = client.get("/missing")
        assert (not_found.status_code, not_found.content) == (404, b'{"error":{}}')

        kept = client.get("/declared")
        assert kept.content == BODY
        assert kept.headers["x-route"] == "yes"
        assert kept.cookies["k"] == "v"
        assert ran == ["background"]
