"""The request head on the wire, and the request body when it is already bytes."""

from __future__ import annotations

import httpx


def encode_head(request: httpx.Request) -> tuple[bytes, bytes | None, bool]:
    """The request head, the body when it is bytes (None: an async stream), and whether the
    body goes out chunked. Host, Content-Length and Transfer-Encoding come from the request's
    headers (httpx sets them) and are added only when missing."""
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    has_host = has_length = chunked = False
    count = 0
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered == b"host":
            has_host = True
        elif lowered == b"content-length":
            has_length = True
        elif lowered == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        parts += (name, b": ", value, b"\r\n")
        count += 1
    body: bytes | None
    try:
        body = request.content
    except httpx.RequestNotRead:
        body = None
    if not has_host:
        parts.insert(1 + 3, b"Host: " + request.url.netloc + b"\r\n")
        count += 1
    if not has_length and not chunked:
        if body is None:
            parts.append(b"Transfer-Encoding: chunked\r\n")
            chunked = True
            count += 1
        elif body or request.method in ("POST", "PUT", "PATCH"):
            parts.append(b"Content-Length: %d\r\n" % len(body))
            count += 1
    parts.append(b"\r\n")
    head = b"".join(parts)
    newlines = head.count(b"\n")
    if newlines != count + 2 or head.count(b"\r") != newlines:
        raise httpx.LocalProtocolError(
            "A request header name or value contains a line break.", request=request
        )
    return head, body, chunked
