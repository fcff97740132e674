"""`xrouter ask`: one prompt to one model, the answer streamed to the terminal.

The request goes through the CreateResponse use case of a container started in this process
(cli/runtime.py), exactly as `POST /v1/responses` would take it; no server is involved.
Standard output carries the answer only (text and tool calls), so it can be piped; reasoning,
notes and errors go to standard error, reasoning dimmed on a terminal. `--json` prints the
final Response as the HTTP route encodes it.

`AnswerPrinter` and `answer` are shared with `xrouter chat`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, TextIO

from xrouter.entrypoints.cli.arguments import positive_int
from xrouter.entrypoints.cli.failure import EXIT_BAD_ARGUMENTS, EXIT_FAILED, EXIT_OK, CommandFailed
from xrouter.entrypoints.cli.runtime import EXIT_INTERRUPTED
from xrouter.entrypoints.config import Settings, env_name

if TYPE_CHECKING:
    from rich.console import Console

    from xrouter.application.create_response import CreateResponse
    from xrouter.domain.events import StreamEvent
    from xrouter.domain.responses import OutputItem, Response, ResponseRequest

# rich, the container and the domain types are imported when the command runs: the `xrouter`
# script builds this parser on every run, and `xrouter --version` must stay instant.


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """`--debug` after the command too (`xrouter ask --debug`); SUPPRESS keeps the
    subcommand's default from overwriting `xrouter --debug ask`."""
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )


def add_ask_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ask = commands.add_parser(
        "ask",
        help="send one prompt to a model and stream the answer",
        description="Send one prompt to a model through this machine's gateway configuration "
        "(no server needed) and stream the answer. The prompt comes from the argument, or "
        f"from standard input when there is none (or it is -). Model: -m, else "
        f"{env_name('default_model')}.",
    )
    ask.add_argument("prompt", nargs="?", default=None, metavar="PROMPT", help="the prompt")
    ask.add_argument("-m", "--model", default=None, help="model id, e.g. local/echo")
    ask.add_argument("-s", "--system", default=None, metavar="SYSTEM", help="instructions")
    ask.add_argument(
        "--no-stream", action="store_true", help="print the answer when it is complete"
    )
    ask.add_argument("--json", action="store_true", help="print the final Response object as JSON")
    ask.add_argument(
        "--max-tokens", type=positive_int, default=None, metavar="N", help="max output tokens"
    )
    add_debug_flag(ask)


def pick_model(requested: str | None, settings: Settings) -> str:
    """The model asked for, else XR_DEFAULT_MODEL, else a usage error saying how to pick."""
    model = requested or settings.default_model
    if not model:
        raise CommandFailed(
            f"no model: pass -m MODEL or set {env_name('default_model')} "
            "(`xrouter models` lists the models, e.g. -m local/echo)",
            EXIT_BAD_ARGUMENTS,
        )
    return model


def read_prompt(argument: str | None, stdin: TextIO) -> str:
    """The argument; standard input when there is none (or it is `-`), unless that is a
    terminal (nobody would know the command waits for typing)."""
    if argument is not None and argument != "-":
        prompt = argument
    elif stdin.isatty():
        raise CommandFailed(
            "no prompt: pass it as an argument or on standard input (echo hi | xrouter ask)",
            EXIT_BAD_ARGUMENTS,
        )
    else:
        prompt = stdin.read()
    if not prompt.strip():
        raise CommandFailed("the prompt is empty", EXIT_BAD_ARGUMENTS)
    return prompt


class _Channel:
    """One console and whether its cursor is at the start of a line."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.at_line_start = True

    def write(self, text: str, style: str | None = None) -> None:
        if not text:
            return
        self.console.print(text, style=style, end="")
        self.at_line_start = text.endswith("\n")

    def end_line(self) -> None:
        if not self.at_line_start:
            self.write("\n")


class AnswerPrinter:
    """Writes an answer as it arrives: text and tool calls on `out`, reasoning dimmed on
    `err`; each kind starts on a fresh line when the other kind was printed before it."""

    def __init__(self, out: Console, err: Console) -> None:
        self._out = _Channel(out)
        self._err = _Channel(err)

    def event(self, event: StreamEvent) -> None:
        from xrouter.domain.events import (
            OutputItemDone,
            OutputTextDelta,
            ReasoningSummaryPartDone,
            ReasoningSummaryTextDelta,
        )

        if isinstance(event, OutputTextDelta):
            self._err.end_line()
            self._out.write(event.delta)
        elif isinstance(event, ReasoningSummaryTextDelta):
            self._err.write(event.delta, "dim")
        elif isinstance(event, ReasoningSummaryPartDone):
            self._err.end_line()
        elif isinstance(event, OutputItemDone):
            self._item_done(event.item)

    def _item_done(self, item: OutputItem) -> None:
        from xrouter.domain.responses import FunctionCallItem, MessageItem, Refusal

        if isinstance(item, FunctionCallItem):
            self._tool_call(item)
        elif isinstance(item, MessageItem):
            for part in item.content:  # a refusal has no delta events: it comes whole
                if isinstance(part, Refusal):
                    self._err.end_line()
                    self._out.write(part.refusal, "red")

    def _tool_call(self, item: OutputItem) -> None:
        from rich.text import Text

        from xrouter.domain.responses import FunctionCallItem

        assert isinstance(item, FunctionCallItem)
        self._err.end_line()
        self._out.end_line()
        line = Text.assemble(("tool call: ", "dim"), (item.name, "bold cyan"), " ", item.arguments)
        self._out.console.print(line)

    def whole(self, response: Response) -> None:
        """A complete answer (--no-stream): its items in order, as a stream would show them."""
        from xrouter.domain.responses import MessageItem, OutputText, ReasoningItem

        for item in response.output:
            if isinstance(item, ReasoningItem):
                for summary in item.summary:
                    self._err.write(summary.text, "dim")
                    self._err.end_line()
            elif isinstance(item, MessageItem):
                for part in item.content:
                    if isinstance(part, OutputText):
                        self._err.end_line()
                        self._out.write(part.text)
                self._item_done(item)
            else:
                self._item_done(item)

    def finish(self, response: Response | None) -> None:
        """End the open lines; say why an incomplete answer stopped."""
        self._out.end_line()
        self._err.end_line()
        if response is not None and response.incomplete_details is not None:
            reason = response.incomplete_details.reason
            self._err.write(f"(the answer stopped early: {reason})\n", "yellow")


def one_line(message: str, code: str | None = None) -> str:
    """A gateway error's message as one line, with the command-line way to list models."""
    line = " ".join(message.split())
    if code == "model_not_found":
        line += " On the command line: `xrouter models`."
    return line


async def answer(
    create: CreateResponse, request: ResponseRequest, printer: AnswerPrinter | None
) -> Response:
    """Run one request through the use case: its events to `printer` as they arrive (a
    stream), or its complete answer (`printer` given, not a stream), and return the final
    Response. A gateway error, before or during the answer, raises CommandFailed (exit 1)."""
    from xrouter.domain.errors import GatewayError
    from xrouter.domain.events import TERMINAL_EVENTS, ErrorEvent, ResponseFailed

    final: Response | None = None
    last_error: str | None = None
    try:
        execution = await create.start(request)
        if not request.stream:
            final = await execution.result()
            if printer is not None:
                printer.whole(final)
            return final
        read_to_the_end = False
        try:
            async for event in execution.events():
                if printer is not None:
                    printer.event(event)
                if isinstance(event, ErrorEvent):
                    last_error = one_line(event.message, event.code)
                elif isinstance(event, ResponseFailed):
                    error = event.response.error
                    raise CommandFailed(
                        one_line(error.message, error.code) if error else last_error or "failed"
                    )
                elif isinstance(event, TERMINAL_EVENTS):
                    final = event.response
            read_to_the_end = True
        finally:
            if not read_to_the_end:  # an interrupt: the reader is gone, as a client would be
                execution.detach()
    except GatewayError as exc:
        raise CommandFailed(one_line(exc.message, exc.code)) from None
    finally:
        if printer is not None:
            printer.finish(final)
    if final is None:
        raise CommandFailed(last_error or "the answer ended without a final response")
    return final


def consoles(out: TextIO, err: TextIO) -> tuple[Console, Console]:
    """rich consoles on `out` and `err`: no markup or highlighting (the model's text is shown
    as it is), no wrapping inserted; colours only on a terminal (rich's own detection, which
    also honours NO_COLOR and FORCE_COLOR)."""
    from rich.console import Console

    def make(file: TextIO) -> Console:
        return Console(file=file, markup=False, highlight=False, emoji=False, soft_wrap=True)

    return make(out), make(err)


def run_ask(
    settings: Settings,
    args: argparse.Namespace,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run `xrouter ask`; a failure is one line on `err`: exit 1 when the request or the
    upstream failed, 2 for usage or configuration, 130 when interrupted."""
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    err = err or sys.stderr
    debug: bool = getattr(args, "debug", False)
    try:
        model = pick_model(args.model, settings)
        prompt = read_prompt(args.prompt, stdin)
        return asyncio.run(_ask(settings, args, model, prompt, out, err))
    except CommandFailed as failed:
        print(f"xrouter ask: {failed.message}", file=err)
        return failed.exit_code
    except KeyboardInterrupt:
        print("", file=err)  # the ^C the terminal echoed stays on its own line
        return EXIT_INTERRUPTED
    except Exception as exc:
        if debug:
            raise
        print(f"xrouter ask: unexpected error: {exc!r} (--debug shows where)", file=err)
        return EXIT_FAILED


async def _ask(
    settings: Settings, args: argparse.Namespace, model: str, prompt: str, out: TextIO, err: TextIO
) -> int:
    import msgspec

    from xrouter.domain.responses import ResponseRequest
    from xrouter.entrypoints.cli.runtime import cli_logging, running_gateway

    cli_logging(getattr(args, "debug", False))
    request = ResponseRequest(
        model=model,
        input=prompt,
        instructions=args.system,
        max_output_tokens=args.max_tokens,
        stream=not (args.no_stream or args.json),
    )
    printer = None if args.json else AnswerPrinter(*consoles(out, err))
    async with running_gateway(settings) as container:
        response = await answer(container.create_response(), request, printer)
    if args.json:
        # The HTTP route's encoder (entrypoints/http/codec.py) is msgspec's JSON encoder with
        # its defaults: the same bytes as the body of POST /v1/responses.
        out.write(msgspec.json.encode(response).decode() + "\n")
        out.flush()
    return EXIT_OK
