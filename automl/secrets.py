"""Passwords in storage and tracking URLs: masked wherever a URL is shown or stored.

A ``postgresql://user:PASSWORD@host/db`` storage or an ``http://user:PASSWORD@host`` MLflow
URI is given by the user each time it is needed (flag or environment); what automl prints,
logs to MLflow or writes to disk carries ``***`` in its place, and worker processes receive
URLs through their environment, not their command line (which ``ps`` shows to every user).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

HIDDEN = "***"
URL_FIELDS = ("storage", "tracking_uri")  # the settings fields that hold URLs
WEB_SCHEMES = ("http", "https")  # MLflow tracking servers; everything else with :// is a SQLAlchemy URL
# libpq and MySQL drivers also read a password from the query string (?password=...).
QUERY_SECRETS = ("password", "passwd")
# Last resort for a URL neither parser accepts (e.g. a port that is not a number): user:secret@.
_USERINFO = re.compile(r"(://[^:/@]*):([^@/]*)@")


def masked(url: str | None) -> str | None:
    """``url`` with its password (userinfo or query) replaced by ``***``; URLs without one, and
    paths such as ``journal:automl.journal``, come back unchanged."""
    if not url or "://" not in url:
        return url
    scheme = url.split("://", 1)[0].lower()
    try:
        if scheme in WEB_SCHEMES:
            return _masked_web(url)
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return _USERINFO.sub(rf"\1:{HIDDEN}@", url)
    hidden = {k: HIDDEN for k in parsed.query if k.lower() in QUERY_SECRETS}
    if parsed.password is None and not hidden:
        return url  # rendering would normalise what needs no change
    return parsed.update_query_dict(hidden).render_as_string(hide_password=True)


def _masked_web(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{HIDDEN}@{host}"))


def passwords(urls: Iterable[str | None]) -> list[str]:
    """The passwords in ``urls``, both as typed (percent-encoded) and decoded, longest first."""
    found: set[str] = set()
    for url in urls:
        if not url or "://" not in url:
            continue
        typed = _USERINFO.search(url)
        found.add(typed.group(2) if typed else "")
        try:
            if url.split("://", 1)[0].lower() in WEB_SCHEMES:
                found.add(urlsplit(url).password or "")
            else:
                parsed = make_url(url)
                found.add(parsed.password or "")
                found.update(v for k, v in parsed.query.items() if k.lower() in QUERY_SECRETS and isinstance(v, str))
        except (ArgumentError, ValueError):
            pass
    return sorted(found - {""}, key=len, reverse=True)


def scrubbed(text: str, *urls: str | None) -> str:
    """``text`` (e.g. a driver's error message) with every password of ``urls`` replaced by ``***``:
    some errors quote the URL they could not use."""
    for secret in passwords(urls):
        text = text.replace(secret, HIDDEN)
    return text


def masked_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (settings, flattened or not) with the URL fields masked: what MLflow and exports keep."""
    return {k: masked(v) if k in URL_FIELDS and isinstance(v, str) else v for k, v in values.items()}
