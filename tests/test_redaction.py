"""Credentials in a tracking URI never reach a log line, a param, a tag or an artifact."""

from __future__ import annotations

import io
import logging

import pytest

from harness.redaction import RedactingFilter, redact, redact_data


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://harness:s3cr3t@mlflow.lab:5000", "http://harness:***@mlflow.lab:5000"),
        ("tracking_uri=https://u:p%40ss@h:443/x", "tracking_uri=https://u:***@h:443/x"),
        ("https://h/api?token=abc123&page=2", "https://h/api?token=***&page=2"),
        ("postgresql+psycopg2://db/mlflow?password=pw&sslmode=on", "postgresql+psycopg2://db/mlflow?password=***&sslmode=on"),
        ("http://h?access_token=x#frag", "http://h?access_token=***#frag"),
        ("tracking_uri=http\\://u\\:pw@h\\:5000", "tracking_uri=http\\://u\\:***@h\\:5000"),  # as Hydra escapes it
        ("python -m harness tracking_uri=http://a:b@h:1", "python -m harness tracking_uri=http://a:***@h:1"),
    ],
)  # fmt: skip
def test_passwords_and_tokens_are_masked_wherever_they_stand(text, shown):
    assert redact(text) == shown


@pytest.mark.parametrize(
    "text",
    ["sqlite:////tmp/mlruns/mlflow.db", "http://127.0.0.1:5000/#/experiments/1?workflowType=machine_learning",
     "unfreeze_at=block_11_expand lr=1e-05", "file:///srv/artifacts", "user@host:/path"],
)  # fmt: skip
def test_text_without_credentials_is_left_alone(text):
    assert redact(text) == text


def test_a_config_and_argv_are_masked_inside():
    config = {"tracking_uri": "http://u:pw@h:5000", "data": {"path": "/d"}, "regimes": ["frozen"], "lr": 1e-5}
    masked = redact_data(config)
    assert masked == {**config, "tracking_uri": "http://u:***@h:5000"}
    assert redact_data(["-m", "tracking_uri=http://u:pw@h"]) == ["-m", "tracking_uri=http://u:***@h"]


def test_log_lines_and_their_tracebacks_are_masked():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("harness.test_redaction")
    logger.addHandler(handler)
    url = "http://u:hunter2@h:5000"
    try:
        raise ConnectionError(f"cannot reach {url}/api")  # the source line, which the traceback shows, holds no secret
    except ConnectionError:
        logger.exception("job [%s] failed", f"tracking_uri={url}")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "hunter2" not in text
    assert "tracking_uri=http://u:***@h:5000" in text and "http://u:***@h:5000/api" in text
