"""Secrets never leave the process: one redaction for every text that does, and unsigned hrefs.

Credentials reach cropflow inside URLs: a tracking URI ``http://user:token@host``, a STAC API
URL with ``?token=...``, asset hrefs signed with a Planetary Computer SAS token (``?st=...&
se=...&sp=...&sig=...``) or an AWS/GCS pre-signed query (``X-Amz-Signature=...``). Every path
by which such a string leaves the process goes through :func:`redact`: log records
(:class:`RedactingFilter`, installed by :func:`install_log_redaction`), the messages of errors
cropflow raises, saved searches, artifacts and Prefect parameters (:func:`redact_data`,
:func:`find_credentials`)::

    redact("http://alice:t0k@mlflow:5000")        -> "http://***@mlflow:5000"
    redact("https://a.blob.core.windows.net/c/x.tif?st=2025&se=2025&sp=rl&sig=AbC%3D")
        -> "https://a.blob.core.windows.net/c/x.tif?st=***&se=***&sp=***&sig=***"

Signed hrefs must never be part of an identity (a cache key, a cube plan): tokens rotate, so
a resumed build would not match, and the identity would store the token. Use
:func:`unsigned_href` there, and sign again where the href is read::

    unsigned_href("https://a.blob.core.windows.net/c/x.tif?sv=1&sig=AbC&format=tif")
        -> "https://a.blob.core.windows.net/c/x.tif?format=tif"
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

#: What replaces a secret.
MASK = "***"

#: Query parameters (compared lower-case) that carry a credential or sign a URL: their values
#: are masked by :func:`redact`, and :func:`unsigned_href` drops them.
SIGNING_PARAMS: frozenset[str] = frozenset(
    {
        # Azure Storage shared access signatures (Planetary Computer tokens)
        "sv", "ss", "srt", "sp", "se", "st", "spr", "sig", "sr", "si", "sdd", "ses",
        "skoid", "sktid", "skt", "ske", "sks", "skv", "saoid", "suoid", "scid",
        # AWS SigV4 / SigV2 pre-signed URLs
        "x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-expires",
        "x-amz-signedheaders", "x-amz-signature", "x-amz-security-token",
        "awsaccesskeyid", "signature", "expires",
        # Google Cloud Storage signed URLs
        "x-goog-algorithm", "x-goog-credential", "x-goog-date", "x-goog-expires",
        "x-goog-signedheaders", "x-goog-signature", "googleaccessid",
        # generic tokens and keys
        "token", "access_token", "refresh_token", "id_token", "auth", "jwt",
        "key", "apikey", "api_key", "api-key", "subscription-key", "subscription_key",
        "password", "passwd", "pwd", "secret", "client_secret",
    }
)  # fmt: skip

#: HTTP headers (compared lower-case) whose values are credentials, when a text shows them.
SECRET_HEADERS = (
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "ocp-apim-subscription-key",
    "x-amz-security-token",
    "cookie",
)

# scheme://userinfo@ : the userinfo runs to the LAST '@' before the host ends ('/', '?', '#',
# whitespace or a quote), so a password holding '@' is masked whole.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#'\"<>\\]+@")
# ?key=value / &key=value / ;key=value (also &amp;key=value in HTML-escaped text)
_QUERY_PARAM = re.compile(
    r"(?P<lead>[?&;](?:amp;)?)(?P<key>[A-Za-z0-9_.\-%]+)=(?P<value>[^&#\s'\"<>;]*)"
)
_HEADER = re.compile(
    r"(?P<name>\b(?:" + "|".join(re.escape(h) for h in SECRET_HEADERS) + r"))"
    r"(?P<sep>['\"]?\s*:\s*['\"]?)(?P<value>[^'\"\r\n,}]+)",
    re.IGNORECASE,
)


def _is_signing_key(key: str) -> bool:
    return unquote_plus(key).lower() in SIGNING_PARAMS


def _mask_param(m: re.Match[str]) -> str:
    if not m.group("value") or not _is_signing_key(m.group("key")):
        return m.group(0)
    return f"{m.group('lead')}{m.group('key')}={MASK}"


def redact(text: str) -> str:
    """``text`` with every credential masked: URL userinfo (``user:token@`` -> ``***@``),
    the values of signing/credential query parameters (:data:`SIGNING_PARAMS`) and of
    credential headers shown as ``Name: value`` (:data:`SECRET_HEADERS`).

    Works on a bare URL and on any text holding URLs (a log line, an error message, JSON).
    """
    if not text:
        return text
    out = _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    if "=" in out:
        out = _QUERY_PARAM.sub(_mask_param, out)
    if ":" in out:
        out = _HEADER.sub(
            lambda m: (
                f"{m.group('name')}{m.group('sep')}{MASK}"
                if m.group("value").strip() != MASK
                else m.group(0)
            ),
            out,
        )
    return out


def redact_data(value: Any) -> Any:
    """A copy of ``value`` (JSON-like: mappings, lists, tuples, strings) with every string
    passed through :func:`redact`; other values are returned as they are."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_data(v) for v in value]
    if isinstance(value, tuple):
        return tuple(redact_data(v) for v in value)
    return value


def find_credentials(value: Any, path: str = "") -> Iterator[str]:
    """The dotted paths of the strings inside ``value`` that hold a credential (those that
    :func:`redact` would change). Pydantic models are walked as their JSON dump."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        value = dump(mode="json")
    if isinstance(value, str):
        if redact(value) != value:
            yield path or "value"
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from find_credentials(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from find_credentials(v, f"{path}[{i}]")


def has_credentials(value: Any) -> bool:
    """Whether ``value`` (a string or JSON-like data) holds a credential."""
    return next(find_credentials(value), None) is not None


def unsigned_href(href: str) -> str:
    """``href`` without what signs or authenticates it: the URL's userinfo and every signing
    or credential query parameter (:data:`SIGNING_PARAMS`); other query parameters are kept
    as written, in their order. Local paths and unsigned URLs come back unchanged.

    Use it wherever an href is part of an identity (a cache key, a cube plan): the same asset
    signed with a rotated token has the same unsigned href. Sign again where it is read
    (:func:`cropflow.stac.signing.sign_href`).
    """
    if "://" not in href:
        return href
    parts = urlsplit(href)
    netloc = parts.netloc.rpartition("@")[2]
    pieces = [p for p in parts.query.split("&") if p]
    kept = [p for p in pieces if not _is_signing_key(p.partition("=")[0])]
    if netloc == parts.netloc and len(kept) == len(pieces):
        return href
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(kept), parts.fragment))


def is_signed(href: str) -> bool:
    """Whether ``href`` carries a signature, a token or userinfo (see :func:`unsigned_href`)."""
    return unsigned_href(href) != href


# --- Logs ------------------------------------------------------------------------------------


class RedactingFilter(logging.Filter):
    """A logging filter that masks credentials in a record's message and traceback.

    It never drops a record. The message is formatted once (``msg % args``) and replaced by
    its redacted text when that differs. A traceback is formatted into ``exc_text`` and, when
    it held a credential, replaced by its redacted text and ``exc_info`` cleared (standard
    formatters then print ``exc_text``; JSON formatters see no exception object).
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """``record`` with credentials masked in place (see :class:`RedactingFilter`)."""
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: leave it to the handler's error path
        message = None
    if message is not None:
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        text = RedactingFilter._formatter.formatException(record.exc_info)
        clean = redact(text)
        if clean != text:
            record.exc_text, record.exc_info = clean, None
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


#: The one filter cropflow installs (so that installing twice adds nothing).
LOG_FILTER = RedactingFilter()
_factory_installed = False


def _install_record_factory() -> None:
    """Redact every record as it is created, whichever handler (added later too) emits it."""
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(previous(*args, **kwargs))

    logging.setLogRecordFactory(factory)
    _factory_installed = True


def install_log_redaction() -> None:
    """Mask credentials in every log record of this process (idempotent).

    Installs :data:`LOG_FILTER` on cropflow's logger and on every handler configured now (the
    root's, Prefect's console and API handlers, MLflow's ...), and a log record factory that
    redacts each record when it is created, so that handlers configured later (Prefect sets
    up logging again in flow-run processes) never see a credential either. A logger's own
    filter would only see records logged on that logger, not those of libraries (MLflow,
    requests, pystac-client, distributed) that reach the same handlers.
    """
    _install_record_factory()
    _add(logging.getLogger("cropflow"))
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        if isinstance(logger, logging.Logger):
            for handler in logger.handlers:
                _add(handler)


def _add(filterer: logging.Filterer) -> None:
    if LOG_FILTER not in filterer.filters:
        filterer.addFilter(LOG_FILTER)


#: Dask preload module (``--preload``, ``LocalCluster(preload=[...])``): this one.
DASK_PRELOAD = __name__


def dask_setup(worker: Any) -> None:
    """Dask preload hook (``--preload cropflow.redact``): redact the logs of a worker process."""
    install_log_redaction()
