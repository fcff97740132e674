"""The files in formal/ and their Python transcriptions name the same things: every invariant
and property a .cfg asks TLC to check is defined in the spec and transcribed; the spec's
variables, constants and actions are the transcription's; every runtime Action is an action of
formal/xrouter.tla. Also a light syntax lint, since TLC cannot run here."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import fields
from types import ModuleType

import pytest

from xrouter.domain.lifecycle import Action

from . import billing_model, inflight_model, model
from .specs import FORMAL, Module, read_config, read_module, strip_comments


def _lifecycle_names() -> set[str]:
    return set(model.invariants()) | set(model.ACTION_PROPERTIES) | set(model.LEADS_TO)


def _inflight_names() -> set[str]:
    return (
        set(inflight_model.invariants())
        | set(inflight_model.action_properties())
        | set(inflight_model.leads_to())
    )


def _billing_names() -> set[str]:
    return (
        set(billing_model.INVARIANTS)
        | set(billing_model.ACTION_PROPERTIES)
        | set(billing_model.LEADS_TO)
    )


SPECS: dict[str, tuple[ModuleType, Callable[[], set[str]]]] = {
    "xrouter": (model, _lifecycle_names),
    "xrouter_inflight": (inflight_model, _inflight_names),
    "xrouter_billing": (billing_model, _billing_names),
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_cfg_names_exist_in_the_spec_and_the_transcription(name: str) -> None:
    module = read_module(name)
    config = read_config(name)
    _, transcribed = SPECS[name]
    assert config.specification == "Spec"
    assert "Spec" in module.definitions
    checked = config.invariants + config.properties
    assert checked, f"{name}.cfg checks nothing"
    missing_in_spec = [n for n in checked if n not in module.definitions]
    assert missing_in_spec == []
    assert set(checked) == transcribed()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_variables_are_the_transcriptions(name: str) -> None:
    module = read_module(name)
    transcription, _ = SPECS[name]
    assert module.variables == list(transcription.TLA_VARIABLES)
    vars_tuple = re.search(r"^vars\s*==\s*<<(.*?)>>", module.text, re.M | re.S)
    assert vars_tuple is not None
    assert [v.strip() for v in vars_tuple.group(1).split(",")] == module.variables
    assert [f.name for f in fields(transcription.State)] == list(
        transcription.TLA_VARIABLES.values()
    )


@pytest.mark.parametrize("name", sorted(SPECS))
def test_constants_are_the_transcriptions(name: str) -> None:
    module = read_module(name)
    config = read_config(name)
    assert sorted(config.constants) == sorted(module.constants)
    expected = {
        "xrouter": {"MaxChunks": str(model.MAX_CHUNKS), "MaxAttempts": str(model.MAX_ATTEMPTS)},
        "xrouter_inflight": {
            "Requests": "{" + ", ".join(inflight_model.REQUESTS) + "}",
            "Providers": "{" + ", ".join(inflight_model.PROVIDERS) + "}",
            "QueueingPools": "{" + ", ".join(inflight_model.QUEUEING_POOLS) + "}",
            "Limit": str(inflight_model.LIMIT),
            "Keys": "{" + ", ".join(inflight_model.KEYS) + "}",
            "KeyLimit": str(inflight_model.KEY_LIMIT),
        },
        "xrouter_billing": {
            "Requests": "{" + ", ".join(billing_model.REQUESTS) + "}",
            "Budget": str(billing_model.BUDGET),
            "Hold": str(billing_model.HOLD),
            "MaxTokens": str(billing_model.MAX_TOKENS),
        },
    }[name]
    assert config.constants == expected


@pytest.mark.parametrize("name", sorted(SPECS))
def test_actions_are_the_transcriptions(name: str) -> None:
    module = read_module(name)
    transcription, _ = SPECS[name]
    spec_actions = set(module.disjuncts("Next")) - {"Requests"}
    spec_actions |= set(module.disjuncts("Serve")) if "Serve" in module.definitions else set()
    spec_actions -= {"Serve"}
    python_actions = set(transcription.ACTIONS) | {"Terminating"}
    assert spec_actions == python_actions
    assert python_actions <= module.definitions


def test_every_runtime_action_is_an_action_of_the_lifecycle_spec() -> None:
    module = read_module("xrouter")
    next_actions = set(module.disjuncts("Next"))
    for action in Action:
        assert str(action) in module.definitions, action
        assert str(action) in next_actions, action
    assert next_actions - {str(a) for a in Action} == {"Terminating"}


def test_fairness_groups_are_the_transcriptions() -> None:
    module = read_module("xrouter")
    groups = {name: set(module.disjuncts(name)) for name in ("Admission", "Generation")}
    assert groups == {k: set(v) for k, v in model.FAIRNESS.items() if k in groups}
    fairness = module.body("Fairness")
    assert re.findall(r"WF_vars\((\w+)\)", fairness) == list(model.FAIRNESS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_text_is_plain_tla(name: str) -> None:
    """What TLC would reject first, read by a machine since TLC cannot run here."""
    raw = (FORMAL / f"{name}.tla").read_text()
    lines = raw.strip().splitlines()
    assert re.fullmatch(rf"-{{4,}} MODULE {name} -{{4,}}", lines[0])
    assert re.fullmatch(r"={4,}", lines[-1])
    text = strip_comments(raw)
    for opening, closing in (("(", ")"), ("[", "]"), ("{", "}"), ("<<", ">>")):
        assert text.count(opening) == text.count(closing), (opening, closing)
    python_isms = r"\b(and|or|not|True|False|None|def|return|elif)\b|!=|\+=|&&|\|\|"
    assert re.findall(python_isms, re.sub(r'"[^"]*"', '""', text)) == []
    assert "\t" not in raw
    # Every variable a definition primes is a declared variable.
    module: Module = read_module(name)
    primed = set(re.findall(r"\b([a-z][A-Za-z]*)'", text))
    assert primed <= set(module.variables)
    # Every UNCHANGED names only variables.
    for group in re.findall(r"UNCHANGED\s*<<(.*?)>>", text, re.S):
        assert {v.strip() for v in group.split(",")} <= set(module.variables)


@pytest.mark.parametrize(
    ("document", "specs"),
    [
        ("property-map.md", ["xrouter", "xrouter_inflight"]),
        ("property-map-billing.md", ["xrouter_billing"]),
    ],
)
def test_property_maps_cover_every_property_and_name_real_tests(
    document: str, specs: list[str]
) -> None:
    text = (FORMAL / document).read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \|(.*)$", text, re.M)}
    for name in specs:
        config = read_config(name)
        for checked in config.invariants + config.properties:
            assert checked in rows, f"{document} does not map {checked}"
            assert "tests/" in rows[checked], f"{document} names no test for {checked}"
    tests_dir = FORMAL.parent / "tests"
    for path, test in re.findall(r"`tests/([\w/]+\.py)::(\w+)(?:\[[^\]]*\])?`", text):
        source = (tests_dir / path).read_text()
        assert re.search(rf"^(?:async )?def {test}\(", source, re.M), f"no test {path}::{test}"


def test_trace_schema_maps_every_runtime_action() -> None:
    text = (FORMAL / "trace-schema.md").read_text()
    for action in Action:
        assert re.search(rf"^\| `{action}` \|.*\| `{action}` \|", text, re.M), action
