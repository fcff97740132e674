"""What the CLI's commands share: their exit codes, and the failure that ends one with a line.

Exit codes a script can rely on: 0 success, 1 the storage, the server or an upstream could not
answer (or nothing has that id), 2 usage or configuration error.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
"""Something outside could not answer (storage, a server), or no key has that id."""
EXIT_BAD_ARGUMENTS = 2
"""Configuration missing or a value refused."""


class CommandFailed(Exception):
    """Ends a command: `message` is printed as one line on stderr, `exit_code` returned."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
