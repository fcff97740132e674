"""No secret in any log line of the whole suite (issue 11 item 4).

`test_no_secret_in_any_log_line_of_the_session` runs last (the module's name sorts last) and
searches every line collected so far (tests/log_audit.py): the output of every `xrouter serve`
process the tests started, and every line the in-process servers logged. The other tests
show that the audit does find a secret, masks it in its report, and names the tests involved.
"""

from __future__ import annotations

import logging

import pytest

from tests.log_audit import SESSION_AUDIT, LogAudit, current_test, secrets_in_env
from xrouter.domain.secrets import SecretMasker
from xrouter.entrypoints.logging_setup import SecretMaskingFilter

KEY = "Yw3pR8nTq5Lc1Vx9Hb6Md2Zs7Kf4Ga0Je8Uo3Ni"
"""A secret only this module uses (an unusual shape: nothing but its value can match it)."""


def test_a_line_holding_a_configured_secret_is_reported_with_the_secret_masked() -> None:
    audit = LogAudit()
    audit.add_env({"XR_UP_API_KEY": KEY, "XR_UP_BASE_URL": "http://127.0.0.1:9"})
    audit.add_text(f"ok line\nWARNING xrouter.engine: upstream said Key {KEY} is bad\nlast")

    (leak,) = audit.leaks()

    assert leak.secret == "XR_UP_API_KEY"
    assert leak.line == "WARNING xrouter.engine: upstream said Key <secret XR_UP_API_KEY> is bad"
    assert KEY not in str(leak)
    assert leak.logged_by == leak.given_by == current_test()
    assert audit.counts() == (3, 1)
    assert audit.secret_names() == ["XR_UP_API_KEY"]


def test_a_redis_password_a_registered_token_and_a_late_output_are_audited() -> None:
    audit = LogAudit()
    audit.add_env({"XR_REDIS_URL": "redis://:Rp9sSw0rdQx@127.0.0.1:6379/0"})
    audit.add_secret("Tk5Rw2Qz8Lm4Np7Vs1Xy", "a client's token")
    output: list[str] = []
    audit.add_text_later(lambda: "".join(output))  # a process still writing when added
    output.append("INFO xrouter: connected to redis://:Rp9sSw0rdQx@127.0.0.1:6379/0\n")
    audit.add_text("ERROR xrouter.http: Bearer Tk5Rw2Qz8Lm4Np7Vs1Xy refused", test="elsewhere")

    leaks = sorted(audit.leaks(), key=lambda leak: leak.secret)

    assert [(leak.secret, leak.logged_by) for leak in leaks] == [
        ("a client's token", "elsewhere"),
        ("password in XR_REDIS_URL", current_test()),
    ]
    assert "<secret password in XR_REDIS_URL>@127.0.0.1" in leaks[1].line


def test_short_values_and_ordinary_variables_are_not_secrets() -> None:
    found = secrets_in_env(
        {
            "XR_UP_API_KEY": "k",  # too short to grep (and to mask)
            "XR_UP_BASE_URL": "http://127.0.0.1:9/v1",
            "XR_REDIS_URL": "redis://127.0.0.1:6379/0",
            "XR_GIGACHAT_CREDENTIALS": "Q2xpZW50OlNlY3JldA==",
            "XR_OTHER_TOKEN": "tok-tok-tok",
        }
    )
    assert found == {
        "Q2xpZW50OlNlY3JldA==": "XR_GIGACHAT_CREDENTIALS",
        "tok-tok-tok": "XR_OTHER_TOKEN",
    }


def test_the_audit_handler_sees_lines_after_the_apps_filter_masked_them() -> None:
    audit = LogAudit()
    logger = logging.getLogger("tests.log_audit.masked")
    logger.addHandler(audit.handler)
    logger.propagate = False  # the session's audit (no filter here) must not see the key
    audit.handler.addFilter(SecretMaskingFilter(SecretMasker([KEY])))
    audit.add_secret(KEY, "KEY")
    try:
        logger.warning("upstream refused %s", KEY)
    finally:
        logger.removeHandler(audit.handler)
        logger.propagate = True
    assert audit.leaks() == []
    assert audit.counts() == (1, 1)


def test_no_secret_in_any_log_line_of_the_session(request: pytest.FixtureRequest) -> None:
    # The handler was on the root logger all along (no test took it off, or lines were lost).
    assert SESSION_AUDIT.handler in logging.getLogger().handlers
    leaks = SESSION_AUDIT.leaks()
    lines, secrets = SESSION_AUDIT.counts()
    request.node.add_report_section("call", "log audit", f"{lines} lines, {secrets} secrets")
    assert not leaks, "\n".join(str(leak) for leak in leaks[:50])
