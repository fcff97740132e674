"""A client that closes its connection mid-body costs one log line, not a traceback."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import pytest


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        formatter = logging.Formatter()
        return "\n".join(formatter.format(r) for r in self.records)


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/chat/completions"])
def test_aborted_upload_logs_one_line(serve_as_cli: Any, path: str) -> None:
    server = serve_as_cli(access_log=False)  # the access line (one more) is test_logging's
    # On the root and on uvicorn's logger, which does not propagate to it; the root at INFO as
    # `xrouter serve` sets it by default (the app leaves logging to its host).
    records = Records()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn")]
    root_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.INFO)
    for logger in loggers:
        logger.addHandler(records)
    try:
        for _ in range(3):
            sock = socket.create_connection((server.host, server.port), timeout=5)
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: 100000\r\n\r\n".encode()
                + b'{"model": "local/echo", "input": "'
                + b"x" * 5000
            )
            time.sleep(0.2)  # the handler is reading the body now
            sock.close()
        deadline = time.monotonic() + 5
        while len(records.records) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # anything logged late would show too
    finally:
        logging.getLogger().setLevel(root_level)
        for logger in loggers:
            logger.removeHandler(records)
    text = records.text()
    assert "Traceback" not in text, text
    assert len(records.records) == 3, text  # one line per aborted upload
    for record in records.records:
        message = record.getMessage()
        assert record.levelno == logging.INFO, message
        assert "request body" in message and path in message, message
    # The server still answers.
    with server.client() as http:
        assert http.get("/health").status_code == 200
