"""`xrouter ask`, run as a user runs it: a subprocess against the local provider and against a
fake OpenAI-compatible upstream on loopback (the upstream runs in this process's thread)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from openai.types.responses import Response as SDKResponse

from tests.upstreams import FakeUpstream, Reply

XROUTER = str(Path(sys.executable).parent / "xrouter")
TIMEOUT_S = 60
CHAT = "/v1/chat/completions"


def cli_env(**extra: str) -> dict[str, str]:
    """This environment without any XR_ setting of the developer's, plus `extra`."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("XR_")}
    clean.pop("NO_COLOR", None)
    return {**clean, **extra}


def upstream_env(upstream: FakeUpstream, **extra: str) -> dict[str, str]:
    """The fake upstream configured as provider `openai`, failures not retried."""
    return cli_env(
        XR_OPENAI_BASE_URL=upstream.base_url,
        XR_OPENAI_API_KEY="sk-test",
        XR_OPENAI_MAX_RETRIES="0",
        **extra,
    )


def run_cli(
    *argv: str, env: Mapping[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [XROUTER, *argv],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else cli_env(),
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as expired:  # what it printed says where it stopped
        raise AssertionError(
            f"xrouter {' '.join(argv)} still running after {TIMEOUT_S} s; "
            f"stdout: {expired.stdout!r}; stderr: {expired.stderr!r}"
        ) from None


def one_line_failure(result: subprocess.CompletedProcess[str], command: str) -> str:
    """The failure's line on stderr (there is exactly one, and no traceback)."""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"xrouter {command}: ")
    return lines[0]


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    """One Chat Completions stream chunk of the fake upstream."""
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-test",
        "choices": [choice],
    }


# -- the local provider ------------------------------------------------------------------------


def test_the_answer_is_printed_on_stdout_and_nothing_else() -> None:
    result = run_cli("ask", "-m", "local/echo", "hello from the terminal")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "hello from the terminal\n",
        "",
    )


def test_the_prompt_comes_from_stdin_and_the_model_from_xr_default_model() -> None:
    env = cli_env(XR_DEFAULT_MODEL="local/echo")
    result = run_cli("ask", env=env, stdin="piped in\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "piped in\n"
    assert run_cli("ask", "-", env=env, stdin="a dash reads stdin").stdout == (
        "a dash reads stdin\n"
    )


def test_no_model_is_a_usage_error_that_says_how_to_pick_one() -> None:
    result = run_cli("ask", "hello")
    assert result.returncode == 2
    line = one_line_failure(result, "ask")
    assert "-m MODEL" in line and "XR_DEFAULT_MODEL" in line and "xrouter models" in line
    assert result.stdout == ""


def test_an_empty_prompt_and_bad_arguments_are_usage_errors() -> None:
    empty = run_cli("ask", "-m", "local/echo", stdin="  \n")
    assert empty.returncode == 2
    assert "empty" in one_line_failure(empty, "ask")
    bad = run_cli("ask", "-m", "local/echo", "--max-tokens", "0", "hi")
    assert bad.returncode == 2 and "--max-tokens" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_an_unknown_model_is_a_request_failure_on_one_line() -> None:
    result = run_cli("ask", "-m", "nope/model", "hello")
    assert result.returncode == 1
    line = one_line_failure(result, "ask")
    assert "'nope/model' does not exist" in line and "xrouter models" in line
    assert result.stdout == ""


def test_a_provider_failure_mid_stream_keeps_the_text_and_exits_1() -> None:
    result = run_cli("ask", "-m", "local/error-mid-stream", "one two three four")
    assert result.returncode == 1
    assert result.stdout == "one two \n"  # the two chunks that came, the line ended
    assert "failed mid-stream" in one_line_failure(result, "ask")


def test_json_prints_the_final_response_as_the_http_api_does() -> None:
    result = run_cli("ask", "-m", "local/echo", "-s", "be brief", "--json", "hello json")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1  # one JSON document on one line, as the route sends
    response = SDKResponse.model_validate_json(result.stdout, strict=True)
    assert response.status == "completed" and response.output_text == "hello json"
    assert response.instructions == "be brief" and response.model == "local/echo"
    assert response.usage is not None and response.usage.output_tokens == 2


def test_no_stream_prints_the_whole_answer_and_max_tokens_cuts_it() -> None:
    result = run_cli("ask", "-m", "local/echo", "--no-stream", "--max-tokens", "2", "a b c d")
    assert result.returncode == 0
    assert result.stdout == "a b \n"
    assert "stopped early: max_output_tokens" in result.stderr


def test_reasoning_goes_to_stderr_and_the_answer_to_stdout() -> None:
    result = run_cli("ask", "-m", "local/think", "think it over")
    assert result.returncode == 0
    assert result.stdout == "think it over\n"
    assert "I will repeat them" in result.stderr


def test_on_a_terminal_reasoning_is_dimmed(tmp_path: Path) -> None:
    import pty

    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [XROUTER, "ask", "-m", "local/think", "colour me"],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env=cli_env(TERM="xterm-256color"),
    )
    os.close(terminal)
    output = read_until_exit(controller, process)
    assert process.returncode == 0
    dim = output.index(b"\x1b[2m")  # SGR 2: faint
    assert output.index(b"I will repeat them") > dim
    assert b"colour me" in output


def read_until_exit(controller: int, process: subprocess.Popen[Any]) -> bytes:
    """Everything the process writes to its terminal until it exits (bounded)."""
    output = b""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.1)
        if ready:
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: the other side closed
                data = b""
            if not data and process.poll() is not None:
                break
            output += data
        elif process.poll() is not None:
            break
    process.wait(timeout=TIMEOUT_S)
    os.close(controller)
    return output


def test_importing_the_cli_does_not_import_rich_litestar_or_httpx() -> None:
    """`xrouter --version` stays instant: the heavy parts are imported by the command that
    needs them."""
    code = (
        "import sys, xrouter.entrypoints.cli.main\n"
        "print(sorted(m for m in ('rich', 'litestar', 'httpx', 'dependency_injector') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- a fake OpenAI-compatible upstream ---------------------------------------------------------


def test_streams_an_upstream_answer_with_the_system_prompt_and_max_tokens(
    fake_upstream: FakeUpstream,
) -> None:
    result = run_cli(
        "ask",
        "-m",
        "openai/gpt-test",
        "-s",
        "You are terse.",
        "--max-tokens",
        "50",
        "what the upstream echoes",
        env=upstream_env(fake_upstream),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "what the upstream echoes\n"
    [sent] = fake_upstream.requests(CHAT)
    assert sent.json["model"] == "gpt-test" and sent.json["stream"] is True
    assert sent.json["messages"][0] == {"role": "system", "content": "You are terse."}
    assert sent.json["messages"][-1]["content"] == "what the upstream echoes"
    assert 50 in (sent.json.get("max_tokens"), sent.json.get("max_completion_tokens"))
    assert sent.headers["authorization"] == "Bearer sk-test"


def test_a_tool_call_is_shown_by_name_and_arguments(fake_upstream: FakeUpstream) -> None:
    call = {"index": 0, "id": "call_1", "type": "function"}
    fake_upstream.script(
        CHAT,
        Reply.sse(
            [
                chunk(
                    {
                        "role": "assistant",
                        "tool_calls": [{**call, "function": {"name": "get_weather"}}],
                    }
                ),
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
                chunk({}, "tool_calls"),
            ]
        ),
    )
    result = run_cli("ask", "-m", "openai/gpt-test", "weather?", env=upstream_env(fake_upstream))
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'tool call: get_weather {"city":"Paris"}\n'


def test_an_upstream_error_is_one_line_and_exit_1(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(CHAT, Reply.error(401, "Incorrect API key provided: sk-te****"))
    result = run_cli("ask", "-m", "openai/gpt-test", "hi", env=upstream_env(fake_upstream))
    assert result.returncode == 1
    line = one_line_failure(result, "ask")
    assert "credentials for openai were refused" in line and "XR_OPENAI_API_KEY" in line
    assert result.stdout == ""


def test_a_broken_configuration_is_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "xrouter.toml"
    config.write_text("[providers.lab\nbase_url = 'x'\n")  # not TOML
    result = run_cli("ask", "-m", "local/echo", "hi", env=cli_env(XR_CONFIG_FILE=str(config)))
    assert result.returncode == 2
    assert "configuration error" in one_line_failure(result, "ask")


def test_ctrl_c_while_streaming_stops_at_once_with_130(fake_upstream: FakeUpstream) -> None:
    words = [chunk({"content": f"word{n} "}) for n in range(200)]
    fake_upstream.script(CHAT, Reply.sse([chunk({"role": "assistant"}), *words], chunk_delay_s=0.1))
    process = subprocess.Popen(
        [XROUTER, "ask", "-m", "openai/gpt-test", "talk slowly"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=upstream_env(fake_upstream),
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        first = b""
        deadline = time.monotonic() + TIMEOUT_S
        while b"word1 " not in first and time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 0.1)
            if ready:
                first += os.read(process.stdout.fileno(), 4096)
        assert b"word0 word1 " in first
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        code = process.wait(timeout=TIMEOUT_S)
        stopped_in = time.monotonic() - started
        stderr = process.stderr.read().decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=TIMEOUT_S)
    assert code == 130
    assert "Traceback" not in stderr and "Error" not in stderr
    assert stopped_in < 10  # not the 20 s the whole answer would take
    # The upstream call was abandoned, not left running to the end.
    assert fake_upstream.wait_until(lambda upstream: upstream.client_aborts >= 1, timeout=10)


def test_help_lists_ask_and_chat() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "ask" in result.stdout and "chat" in result.stdout
    usage = run_cli("ask", "--help").stdout
    for option in ("-m", "-s", "--no-stream", "--json", "--max-tokens", "PROMPT"):
        assert option in usage


def test_json_output_is_parseable_by_the_standard_library_too() -> None:
    result = run_cli("ask", "-m", "local/echo", "--json", "x")
    body = json.loads(result.stdout)
    assert body["object"] == "response" and body["output"][0]["content"][0]["text"] == "x"


@pytest.mark.parametrize("argv", [["--debug", "ask"], ["ask", "--debug"]])
def test_debug_is_accepted_before_and_after_the_command(argv: list[str]) -> None:
    result = run_cli(*argv, "-m", "local/echo", "debugging")
    assert result.returncode == 0 and result.stdout == "debugging\n"
