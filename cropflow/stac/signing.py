"""Signing asset hrefs for providers that need it (Planetary Computer SAS tokens).

A profile with ``sign: planetary-computer`` keeps hrefs unsigned (:func:`unsigned`): plans,
cache keys and saved files hold no token; every read signs its href afresh
(:func:`readable_href`), so a build resumed after the token expired still reads.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlparse

from cropflow.errors import ProviderError
from cropflow.settings import get_settings

log = logging.getLogger(__name__)

# --- Planetary Computer signing -------------------------------------------------------------

_BLOB_DOMAIN = ".blob.core.windows.net"
_warned_unsigned = False


def sign_href(href: str) -> str:
    """Sign an Azure Blob href with a Planetary Computer SAS token (other hrefs unchanged).

    Uses the ``planetary-computer`` package when it is installed (``pip install
    'cropflow[pc]'``); without it the href is returned unsigned with a one-time warning.
    Token requests retry like STAC requests (``settings.stac.max_retries`` / ``backoff_s``).
    """
    parsed = urlparse(href)
    if not parsed.netloc.endswith(_BLOB_DOMAIN) or {"st", "se", "sp"} & set(parse_qs(parsed.query)):
        return href
    try:
        from planetary_computer.sas import get_token
    except ImportError:
        global _warned_unsigned
        if not _warned_unsigned:
            log.warning(
                "planetary-computer is not installed: Planetary Computer hrefs stay unsigned "
                "and reading them will fail (pip install 'cropflow[pc]')"
            )
            _warned_unsigned = True
        return href
    account = parsed.netloc[: -len(_BLOB_DOMAIN)]
    container = parsed.path.lstrip("/").split("/", 1)[0]
    stac = get_settings().stac
    try:
        token = get_token(
            account, container, retry_total=stac.max_retries, retry_backoff_factor=stac.backoff_s
        )
    except Exception as exc:  # requests/pydantic errors from the token service
        raise ProviderError(
            f"could not get a Planetary Computer SAS token for {href!r}: {exc}",
            hint="check the network, or set PC_SDK_SUBSCRIPTION_KEY / PC_SDK_SAS_URL",
        ) from None
    signed: str = token.sign(href).href
    return signed


_SAS_PARAMS = ("st", "se", "sp", "sv", "sr", "sig", "skoid", "sktid", "skt", "ske", "sks", "skv")


def unsigned(href: str) -> str:
    """``href`` without a SAS signature in its query string (other hrefs unchanged)."""
    parsed = urlparse(href)
    if not parsed.query or not parsed.netloc.endswith(_BLOB_DOMAIN):
        return href
    kept = [
        part for part in parsed.query.split("&") if part.split("=", 1)[0].lower() not in _SAS_PARAMS
    ]
    return parsed._replace(query="&".join(kept)).geturl()


def readable_href(href: str, sign: str = "none") -> str:
    """The href to open now: signed afresh for ``sign == "planetary-computer"``."""
    return sign_href(href) if sign == "planetary-computer" else href
