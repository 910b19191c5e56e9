"""Credentials never leave the process: a password in a URI or a token in its query is masked wherever the harness
writes or prints text (run params and tags, artifacts, the sweep's description, the report, errors, logs).

MLflow itself still connects with the URI as given. The README recommends MLflow's own variables
(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD) instead, which keep credentials out of the URI.
"""

from __future__ import annotations

import logging
import re
from typing import Any

MASK = "***"
# scheme://user:password@host -> scheme://user:***@host (also inside longer text: a command line, a message, and
# as Hydra writes overrides in its logs and job names, with each ':' escaped as '\:')
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*\\?://[^\s/:@\\]*\\?:)(?P<secret>[^\s@/]+)(?=@)")
# ?token=...&password=... (any parameter whose name says it holds a secret)
_QUERY = re.compile(
    r"(?P<head>[?&](?:[\w.-]*(?:token|password|passwd|pwd|secret|api[_-]?key|apikey|auth|credential|signature|sig)"
    r"[\w.-]*)=)(?P<secret>[^&\s#'\"]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with every URI password and secret-named query value replaced by ***."""
    return _QUERY.sub(rf"\g<head>{MASK}", _USERINFO.sub(rf"\g<head>{MASK}", text))


def redact_data(value: Any) -> Any:
    """`redact` applied to every string inside nested dicts, lists and tuples (a resolved config, argv)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_data(v) for v in value)
    return value


class RedactingFilter(logging.Filter):
    """Masks credentials in a log record's final message and in its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        mask_record(record)
        return True


def mask_record(record: logging.LogRecord) -> logging.LogRecord:
    message = record.getMessage()
    masked = redact(message)
    if masked != message:
        record.msg, record.args = masked, None
    if record.exc_info and not record.exc_text:  # the traceback's messages too (formatted once, cached here)
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    return record


def install_log_filter() -> None:
    """Mask every log record of this process as it is made (a record factory): unlike a filter on handlers, it
    survives the launchers' re-configuration of logging (Hydra's launchers set it up again per sweep and job,
    and log each job's overrides)."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "masks_credentials", False):
        return

    def masking_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return mask_record(factory(*args, **kwargs))

    masking_factory.masks_credentials = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(masking_factory)
