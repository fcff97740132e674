"""Rewrite the variables table of docs/configuration.md from Settings (its one source):
`.venv/bin/python scripts/config_table.py`. tests/test_config.py checks they agree."""

from __future__ import annotations

from pathlib import Path

from xrouter.entrypoints.config import documented_variables

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
HEADER = "| variable | default | meaning |\n|---|---|---|\n"


def main() -> None:
    text = DOC.read_text()
    start = text.index(HEADER) + len(HEADER)
    end = text.index("\n\n", start)
    rows = "\n".join(
        f"| `{name}` | `{default}` | {meaning} |"
        for name, default, meaning in documented_variables()
    )
    DOC.write_text(text[:start] + rows + text[end:])


if __name__ == "__main__":
    main()
