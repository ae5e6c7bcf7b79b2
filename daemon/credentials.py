"""API keys: from the environment or systemd credentials, never from a manifest; and log masking.

A key is read once by the supervisor and handed to workers in `StageContext.secrets`; it must
never reach a log line or a file in the spool, so every log record passes through `mask`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from podspool.stages.settings import KEY_ENV_NAMES

# api name (as the providers ask for it) -> environment variable; one table, shared with the
# providers so their "no key" message names the same variable
ENV_NAMES: dict[str, str] = KEY_ENV_NAMES
MASK = "***"
# Credentials that look like keys even when they are not ours (a header echoed in an error).
_AUTH_PATTERNS = (
    re.compile(r"(?i)(\bBearer\s+)[^\s'\",;]+"),
    re.compile(r"(?i)(\bxi-api-key['\"]?\s*[:=]\s*['\"]?)[^\s'\",;]+"),
)
# What each pattern cannot match without (lower case): an ASCII text that lacks all of them is left alone,
# which spares the supervisor two regex scans per string of every log record. (Not for other text: the
# patterns' case-insensitive matching also takes a few non-ASCII letters for i and k.)
_AUTH_WORDS = ("bearer", "xi-api-key")
MIN_KEY_LEN = 4  # shorter "keys" would mask ordinary words in every log line
# The remote executor's credentials, read like the API keys: `$VAR`, else `$CREDENTIALS_DIRECTORY/<var
# lower-case>` (systemd's LoadCredential=). Neither is ever stored in Redis or in a config file.
BROKER_KEY_ENV = "PODSPOOL_BROKER_KEY"  # signs task messages and results (HMAC); the same on every host
BROKER_PASSWORD_ENV = "PODSPOOL_BROKER_PASSWORD"  # the Redis password, when broker_url carries none
# A URL's user-info (`user:password@`) and query values (`?token=...`) are secrets as often as not.
_URL = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{1,15}://)(\S*@)?([^\s?#]*)(\?[^\s#]*)?")


def load_secrets(environ: Mapping[str, str] | None = None,
                 credentials_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """api name -> key, from `$ENV_NAME`, else `$CREDENTIALS_DIRECTORY/<env_name lower-case>`.

    APIs with no key are absent; the provider that needs one fails with the variable's name.
    """
    env = os.environ if environ is None else environ
    creds = credentials_dir if credentials_dir is not None else env.get("CREDENTIALS_DIRECTORY")
    found: dict[str, str] = {}
    for api, var in ENV_NAMES.items():
        value = (env.get(var) or "").strip()
        if not value and creds:
            try:
                value = (Path(creds) / var.lower()).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError):
                value = ""
        if value:
            found[api] = value
    return found


def read_credential(var: str, environ: Mapping[str, str] | None = None,
                    credentials_dir: str | os.PathLike[str] | None = None) -> str | None:
    """`$var`, else the file `$CREDENTIALS_DIRECTORY/<var lower-case>`, stripped; None when neither is set."""
    env = os.environ if environ is None else environ
    value = (env.get(var) or "").strip()
    creds = credentials_dir if credentials_dir is not None else env.get("CREDENTIALS_DIRECTORY")
    if not value and creds:
        try:
            value = (Path(creds) / var.lower()).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            value = ""
    return value or None


def redact_urls(text: str) -> str:
    """`text` with the password of every URL's user-info (a user-info without one: all of it) and every
    query value replaced by ***: `redis://:pw@host/0` -> `redis://:***@host/0`, `?token=t` -> `?token=***`."""
    if "://" not in text:
        return text

    def one(m: re.Match[str]) -> str:
        scheme, userinfo, rest, query = m.group(1), m.group(2) or "", m.group(3), m.group(4) or ""
        if userinfo:
            user, colon, _password = userinfo[:-1].partition(":")
            userinfo = f"{user}:{MASK}@" if colon else f"{MASK}@"
        if len(query) > 1:
            query = "?" + "&".join(p.partition("=")[0] + "=" + MASK if p else p for p in query[1:].split("&"))
        return scheme + userinfo + rest + query

    return _URL.sub(one, text)


def _keys(secrets: Mapping[str, str] | Iterable[str]) -> list[str]:
    values = secrets.values() if isinstance(secrets, Mapping) else secrets
    # longest first, so a key that contains another is replaced whole
    return sorted({v for v in values if v and len(v) >= MIN_KEY_LEN}, key=len, reverse=True)


def mask(text: str, secrets: Mapping[str, str] | Iterable[str]) -> str:
    """`text` with every key, any `Bearer <token>` / `xi-api-key: <token>`, and URLs' passwords and query
    values replaced by ***."""
    return _mask(text, _keys(secrets))


def _mask(text: str, keys: list[str]) -> str:
    for key in keys:
        text = text.replace(key, MASK)
    text = redact_urls(text)
    if text.isascii():
        low = text.lower()
        if not any(w in low for w in _AUTH_WORDS):
            return text
    for pattern in _AUTH_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    return text


def _mask_exception(exc: BaseException | None, keys: list[str], seen: set[int]) -> None:
    # Loguru formats the exception from the live object, so its args are masked in place (the
    # exception is being logged, nothing else reads it after), along its cause/context chain.
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        try:
            exc.args = tuple(_mask(a, keys) if isinstance(a, str) else a for a in exc.args)
        except (AttributeError, TypeError):
            pass
        _mask_exception(exc.__cause__, keys, seen)
        exc = exc.__context__


def masking_patcher(secrets: Mapping[str, str] | Iterable[str]) -> Callable[[Any], None]:
    """A loguru patcher that masks the message, string `extra` values and the exception text."""
    keys = _keys(secrets)

    def patch(record: Any) -> None:
        record["message"] = _mask(record["message"], keys)
        extra = record["extra"]
        for name, value in list(extra.items()):
            if isinstance(value, str):
                extra[name] = _mask(value, keys)
        if record["exception"] is not None:
            _mask_exception(record["exception"].value, keys, set())

    return patch


def install_log_masking(logger: Any, secrets: Mapping[str, str] | Iterable[str]) -> None:
    """Mask keys in every record of `logger` (loguru): sets the core patcher.

    Loguru has one core patcher; a caller that needs its own should call `masking_patcher(...)`
    from it. Sinks should keep `diagnose=False`: variable values in a traceback are not masked.
    """
    logger.configure(patcher=masking_patcher(secrets))
