"""Setting names belong to the configuration: only `entrypoints` knows that a setting is spelled
`XR_<FIELD>` or `XR_<PROVIDER>_<FIELD>`. The inner layers name a setting in their messages by
the names `entrypoints` hands them (`SettingNames`, `EngineSettings.setting_names`, the
tokenizer's `max_chars_setting`); the tests that assert those messages (transport, GigaChat,
use cases, HTTP) check the names still arrive."""

from __future__ import annotations

from pathlib import Path

SRC = Path(__file__).parent.parent / "src" / "xrouter"
INNER_LAYERS = ("domain", "application", "adapters")


def test_no_inner_layer_spells_a_setting_variable() -> None:
    modules = [path for layer in INNER_LAYERS for path in sorted((SRC / layer).rglob("*.py"))]
    assert len(modules) > 50  # the scan found the source tree
    offenders = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in modules
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "XR_" in line
    ]
    assert offenders == [], "name settings through entrypoints, not as XR_ literals"
