"""`xrouter chat`, run as a user runs it: piped standard input (one line per turn) and a
pseudo-terminal, against the local provider and a fake OpenAI-compatible upstream whose
requests show what the gateway sent on each turn."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import time
from typing import Any

from tests.redis_servers import RedisServer
from tests.test_cli_ask import (
    CHAT,
    TIMEOUT_S,
    XROUTER,
    cli_env,
    one_line_failure,
    run_cli,
    upstream_env,
)
from tests.upstreams import FakeUpstream


def conversation(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(role, text) of each message an upstream was sent."""
    return [(m["role"], m["content"]) for m in messages]


# -- piped standard input ----------------------------------------------------------------------


def test_each_line_is_a_turn_and_the_next_turn_carries_the_earlier_one(
    fake_upstream: FakeUpstream,
) -> None:
    result = run_cli(
        "chat",
        "-m",
        "openai/gpt-test",
        "-s",
        "Be brief.",
        env=upstream_env(fake_upstream),
        stdin="my name is Ada\nwhat is my name\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "my name is Ada\nwhat is my name\n"  # answers only
    first, second = fake_upstream.requests(CHAT)
    assert conversation(first.json["messages"]) == [
        ("system", "Be brief."),
        ("user", "my name is Ada"),
    ]
    assert conversation(second.json["messages"]) == [
        ("system", "Be brief."),
        ("user", "my name is Ada"),
        ("assistant", "my name is Ada"),
        ("user", "what is my name"),
    ]


def test_reset_starts_a_new_conversation(fake_upstream: FakeUpstream) -> None:
    result = run_cli(
        "chat",
        "-m",
        "openai/gpt-test",
        env=upstream_env(fake_upstream),
        stdin="forget me\n/reset\nfresh start\n",
    )
    assert result.returncode == 0, result.stderr
    assert "(new conversation)" in result.stderr
    _, after_reset = fake_upstream.requests(CHAT)
    assert conversation(after_reset.json["messages"]) == [("user", "fresh start")]


def test_model_switches_and_the_conversation_goes_on(fake_upstream: FakeUpstream) -> None:
    result = run_cli(
        "chat",
        "-m",
        "local/echo",
        env=upstream_env(fake_upstream),
        stdin="said locally\n/model openai/gpt-test\nsaid upstream\n/model\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "said locally\nsaid upstream\n"
    assert "(model: openai/gpt-test" in result.stderr
    [upstream_turn] = fake_upstream.requests(CHAT)  # the first turn never left the process
    assert conversation(upstream_turn.json["messages"]) == [
        ("user", "said locally"),
        ("assistant", "said locally"),
        ("user", "said upstream"),
    ]


def test_exit_leaves_and_blank_lines_are_skipped() -> None:
    result = run_cli("chat", "-m", "local/echo", stdin="\n  \nonly this\n/exit\nnot this\n")
    assert (result.returncode, result.stdout) == (0, "only this\n")


def test_a_failed_turn_is_reported_the_chat_goes_on_and_the_exit_code_is_1() -> None:
    result = run_cli("chat", "-m", "nope/model", stdin="hello\n/model local/echo\nagain\n")
    assert result.returncode == 1
    assert result.stdout == "again\n"
    assert "Traceback" not in result.stderr
    failures = [line for line in result.stderr.splitlines() if line.startswith("xrouter chat:")]
    assert len(failures) == 1 and "'nope/model' does not exist" in failures[0]


def test_without_a_model_it_is_a_usage_error() -> None:
    result = run_cli("chat", stdin="hello\n")
    assert result.returncode == 2
    assert "XR_DEFAULT_MODEL" in one_line_failure(result, "chat")


def test_the_history_lives_in_the_redis_store(
    fake_upstream: FakeUpstream,
    redis_server: RedisServer,
) -> None:
    env = upstream_env(fake_upstream, XR_STORAGE="redis", XR_REDIS_URL=redis_server.url)
    result = run_cli("chat", "-m", "openai/gpt-test", env=env, stdin="kept in redis\nand then\n")
    assert result.returncode == 0, result.stderr
    _, second = fake_upstream.requests(CHAT)
    assert ("user", "kept in redis") in conversation(second.json["messages"])
    stored = set(re.findall(r"\{(resp_\w+)\}", redis_server.cli("KEYS", "*")))
    assert len(stored) == 2  # both turns, stored by the gateway in Redis


# -- a pseudo-terminal -------------------------------------------------------------------------


class Terminal:
    """The chat on a pseudo-terminal, as a person would run it (every read bounded)."""

    def __init__(self, *argv: str, env: dict[str, str]) -> None:
        self.controller, terminal = pty.openpty()
        self.process = subprocess.Popen(
            [XROUTER, *argv],
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            env={**env, "TERM": "xterm-256color"},
            start_new_session=True,  # this test's own Ctrl-C does not reach it
        )
        os.close(terminal)
        self.output = b""

    def type(self, text: bytes) -> None:
        os.write(self.controller, text)

    def wait_for(self, text: bytes, timeout_s: float = TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.output:
            assert time.monotonic() < deadline, f"{text!r} not in {self.output!r}"
            ready, _, _ = select.select([self.controller], [], [], 0.1)
            if ready:
                try:
                    self.output += os.read(self.controller, 65536)
                except OSError:
                    assert text in self.output, f"{text!r} not in {self.output!r}"

    def exit_code(self) -> int:
        try:
            code = self.process.wait(timeout=TIMEOUT_S)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=TIMEOUT_S)
        self.drain()
        os.close(self.controller)
        return code

    def drain(self) -> None:
        while select.select([self.controller], [], [], 0.05)[0]:
            try:
                data = os.read(self.controller, 65536)
            except OSError:
                return
            if not data:
                return
            self.output += data


def test_a_terminal_session_prompts_answers_and_leaves_on_exit(
    fake_upstream: FakeUpstream,
) -> None:
    terminal = Terminal("chat", "-m", "openai/gpt-test", env=upstream_env(fake_upstream))
    terminal.wait_for(b"Chatting with openai/gpt-test")
    terminal.wait_for(b"> ")
    terminal.type(b"first words\n")
    terminal.wait_for(b"first words\r\nfirst words")  # the echo of the line, then the answer
    terminal.type(b"second words\n")
    terminal.wait_for(b"second words\r\nsecond words")
    terminal.type(b"/exit\n")
    assert terminal.exit_code() == 0
    second = fake_upstream.requests(CHAT)[1]
    assert ("user", "first words") in conversation(second.json["messages"])
    assert b"Traceback" not in terminal.output


def test_ctrl_d_at_the_prompt_leaves_with_0() -> None:
    terminal = Terminal("chat", "-m", "local/echo", env=cli_env())
    terminal.wait_for(b"> ")
    terminal.type(b"\x04")  # the terminal's end of file
    assert terminal.exit_code() == 0


def test_ctrl_c_at_the_prompt_and_during_an_answer_exits_130(
    fake_upstream: FakeUpstream,
) -> None:
    at_prompt = Terminal("chat", "-m", "local/echo", env=cli_env())
    at_prompt.wait_for(b"> ")
    at_prompt.process.send_signal(signal.SIGINT)
    assert at_prompt.exit_code() == 130
    assert b"Traceback" not in at_prompt.output

    slow = Terminal("chat", "-m", "local/slow", env=cli_env(XR_LOCAL_SLOW_DELAY_S="5"))
    slow.wait_for(b"> ")
    slow.type(b"one two three four\n")
    slow.wait_for(b"one two three four\r\none ")  # the first chunk; the next is 5 s away
    started = time.monotonic()
    slow.process.send_signal(signal.SIGINT)
    assert slow.exit_code() == 130
    assert time.monotonic() - started < 4
    assert b"Traceback" not in slow.output
