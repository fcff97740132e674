"""`xrouter chat`: a conversation with a model, one line per turn.

Each turn is a stored response (`store: true`) continuing the previous one through
`previous_response_id`, so the history lives in the configured response store (memory: this
process; Redis: shared, as for the server) and the gateway, not this loop, assembles what the
model reads. Commands: `/model NAME` switches the model (the conversation goes on), `/reset`
starts a new conversation, `/exit` (or end of input) leaves.

From a terminal it prompts and keeps line editing; from piped standard input it reads one
turn per line and prints only the answers on standard output. A failed turn is reported as
one line on standard error and the conversation goes on from the last good turn; the exit
code is then 1 at the end. Ctrl-C stops at once (exit 130).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import TYPE_CHECKING, TextIO

from xrouter.entrypoints.cli.ask import add_debug_flag, pick_model
from xrouter.entrypoints.cli.failure import EXIT_FAILED, EXIT_OK, CommandFailed
from xrouter.entrypoints.cli.runtime import EXIT_INTERRUPTED, STOP_NOW_S
from xrouter.entrypoints.config import Settings, env_name

if TYPE_CHECKING:
    from rich.console import Console

    from xrouter.entrypoints.cli.ask import AnswerPrinter
    from xrouter.entrypoints.cli.runtime import Gateway

# rich and the container are imported when the command runs (`xrouter --version` stays instant).

PROMPT = "> "
HELP = "/model NAME switches the model, /reset starts over, /exit leaves (or Ctrl-D)"


def add_chat_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chat = commands.add_parser(
        "chat",
        help="talk with a model, turn after turn",
        description="An interactive conversation through this machine's gateway configuration "
        "(no server needed); each turn continues the last through previous_response_id. "
        f"{HELP}. Model: -m, else {env_name('default_model')}.",
    )
    chat.add_argument("-m", "--model", default=None, help="model id, e.g. local/echo")
    chat.add_argument(
        "-s", "--system", default=None, metavar="SYSTEM", help="instructions for every turn"
    )
    add_debug_flag(chat)


class Conversation:
    """What the loop keeps between turns: the model, and the last answer to continue from."""

    def __init__(self, model: str, system: str | None) -> None:
        self.model = model
        self.system = system
        self.previous_response_id: str | None = None
        self.failed_turns = 0

    def command(self, line: str, note: Console) -> bool:
        """Apply a `/command`; False when it asks to leave."""
        name, _, rest = line.partition(" ")
        argument = rest.strip()
        if name in ("/exit", "/quit"):
            return False
        if name == "/reset":
            self.previous_response_id = None
            note.print("(new conversation)", style="dim")
        elif name == "/model" and argument:
            self.model = argument
            note.print(f"(model: {self.model}; the conversation goes on)", style="dim")
        elif name == "/model":
            note.print(f"(model: {self.model})", style="dim")
        else:
            note.print(f"unknown command {name}: {HELP}", style="yellow")
        return True


def run_chat(
    settings: Settings,
    args: argparse.Namespace,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run `xrouter chat` until /exit or the end of input: exit 0, or 1 when a turn failed;
    2 for usage or configuration, 130 when interrupted."""
    from xrouter.entrypoints.cli.ask import AnswerPrinter, consoles
    from xrouter.entrypoints.cli.runtime import cli_logging, start_gateway

    stdin = stdin or sys.stdin
    out = out or sys.stdout
    err = err or sys.stderr
    debug: bool = getattr(args, "debug", False)
    try:
        conversation = Conversation(pick_model(args.model, settings), args.system)
    except CommandFailed as failed:
        print(f"xrouter chat: {failed.message}", file=err)
        return failed.exit_code
    out_console, err_console = consoles(out, err)
    printer = AnswerPrinter(out_console, err_console)
    cli_logging(debug)
    with asyncio.Runner() as runner:
        gateway: Gateway | None = None
        grace: float | None = None
        try:
            gateway = runner.run(start_gateway(settings))
            _loop(runner, gateway, conversation, printer, stdin, out_console, err_console)
        except CommandFailed as failed:
            print(f"xrouter chat: {failed.message}", file=err)
            return failed.exit_code
        except KeyboardInterrupt:
            print("", file=err)  # the ^C the terminal echoed stays on its own line
            grace = STOP_NOW_S
            return EXIT_INTERRUPTED
        except Exception as exc:
            if debug:
                raise
            grace = STOP_NOW_S
            print(f"xrouter chat: unexpected error: {exc!r} (--debug shows where)", file=err)
            return EXIT_FAILED
        finally:
            if gateway is not None:
                # A second Ctrl-C while stopping: leave now.
                with contextlib.suppress(KeyboardInterrupt):
                    runner.run(gateway.stop(grace))
    return EXIT_FAILED if conversation.failed_turns else EXIT_OK


def _loop(
    runner: asyncio.Runner,
    gateway: Gateway,
    conversation: Conversation,
    printer: AnswerPrinter,
    stdin: TextIO,
    out: Console,
    err: Console,
) -> None:
    """Read a line, answer it, until /exit or the end of input. Reading the terminal blocks
    outside the event loop (so Ctrl-C at the prompt is an ordinary KeyboardInterrupt); each
    turn runs on `runner`'s loop, the one the gateway was started on."""
    from xrouter.domain.responses import ResponseRequest
    from xrouter.entrypoints.cli.ask import answer

    create = gateway.container.create_response()
    interactive = stdin.isatty()
    if interactive:
        import readline  # noqa: F401  (line editing and history for input())

        err.print(f"Chatting with {conversation.model}. {HELP}.", style="dim")
    while True:
        line = _read_line(stdin, interactive, out)
        if line is None:
            return
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            if not conversation.command(text, err):
                return
            continue
        request = ResponseRequest(
            model=conversation.model,
            input=text,
            instructions=conversation.system,
            previous_response_id=conversation.previous_response_id,
            stream=True,
            store=True,
        )
        try:
            response = runner.run(answer(create, request, printer))
        except CommandFailed as failed:
            conversation.failed_turns += 1
            err.print(f"xrouter chat: {failed.message}", style="red")
            continue
        conversation.previous_response_id = response.id


def _read_line(stdin: TextIO, interactive: bool, out: Console) -> str | None:
    """The next line, None at the end of input. On a terminal, input() prompts and gives
    readline's editing and history; a pipe is read as it is, with no prompt."""
    if not interactive or stdin is not sys.stdin:
        line = stdin.readline()
        return line if line else None
    try:
        return input(PROMPT)
    except EOFError:
        out.print()  # Ctrl-D leaves the cursor after the prompt
        return None
