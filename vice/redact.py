"""Credentials never leave the process: ``user:password@`` in any URI becomes ``***@``.

Everything that writes or prints a URI (MLflow params and tags, ``config.yaml``, checkpoints, plans,
hints, error messages, log lines) passes it through :func:`redact_uri`. This module imports nothing of
the project, so the method library and the orchestration can both use it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

#: What replaces a URI's user info (``user``, ``user:password``).
REDACTED = "***"
#: ``scheme://`` then the user info up to the last ``@`` of the authority (which ends at ``/?#``,
#: whitespace or a quote); the user info of a URI must percent-encode any of those.
_USER_INFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#'\"]*@")


def redact_uri(text: str) -> str:
    """Replace the user info of every URI inside ``text`` with :data:`REDACTED`.

    ``http://vuser:s3cretPW@127.0.0.1:5001`` -> ``http://***@127.0.0.1:5001``;
    ``postgresql://user@host/db`` -> ``postgresql://***@host/db``. Text without user info is returned
    unchanged, and redacting twice changes nothing more.

    Args:
        text: any string: a URI, a message, a traceback, a YAML document.

    Returns:
        ``text`` with every ``scheme://<user info>@`` turned into ``scheme://***@``.
    """
    return _USER_INFO.sub(rf"\g<scheme>{REDACTED}@", text)


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """Split a URI into the URI without its user info, the user name and the password (decoded).

    ``http://vuser:s3cret%40PW@host:5001/x`` -> ``("http://host:5001/x", "vuser", "s3cret@PW")``; a URI
    without user info comes back unchanged with ``(None, None)``.
    """
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri, None, None
    user_info, _, host = parts.netloc.rpartition("@")
    user, has_password, password = user_info.partition(":")
    clean = urlunsplit(parts._replace(netloc=host))
    return clean, unquote(user), unquote(password) if has_password else None


class RedactingFilter(logging.Filter):
    """A handler filter that redacts credentials from a record's message and its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place (message with its args merged in, traceback text); keep it."""
        record.msg, record.args = redact_uri(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_uri(record.exc_text)
        return True


def redact_logs(logger: logging.Logger | None = None) -> None:
    """Put a :class:`RedactingFilter` on every handler of ``logger`` (default: the root logger), once.

    Call it after logging is configured (``logging.basicConfig``, or inside a Hydra task).
    """
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def redact_hydra_output() -> None:
    """Redact credentials from what Hydra wrote for this job (``.hydra/*.yaml``) and from its log lines.

    Hydra saves the job's overrides before it calls the task function: call this first thing in it.
    Outside a Hydra job only the log handlers get their filter.
    """
    from hydra.core.hydra_config import HydraConfig

    redact_logs()
    if not HydraConfig.initialized() or HydraConfig.get().output_subdir is None:
        return
    hydra_cfg = HydraConfig.get()
    for path in (Path(hydra_cfg.runtime.output_dir) / str(hydra_cfg.output_subdir)).glob("*.yaml"):
        text = path.read_text()
        if redact_uri(text) != text:
            path.write_text(redact_uri(text))
