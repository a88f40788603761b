"""Secrets out of URLs before they are shown, returned or logged.

A connection URL may carry a password (`redis://:secret@host`, `redis://user:secret@host`,
`rediss://host?password=secret`, an S3 URL with keys). Anything that puts a configured URL in
a log line, an error message or a response goes through `redact_url` (one URL) or
`redact_text` (free text that may contain URLs, such as a client library's exception).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
# Query parameters whose values are secrets (Redis's `password`, S3 presigned signatures,
# generic tokens); compared in lower case.
SECRET_PARAMS = frozenset(
    {
        "password",
        "pass",
        "passwd",
        "secret",
        "token",
        "access_token",
        "key",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "signature",
    }
)
# A URL with a scheme inside free text; ends at whitespace or a closing quote/bracket.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>)\]]+")


def redact_url(url: str) -> str:
    """`url` with the password of its user part and the values of secret query parameters
    replaced by `***`; the user name, host, port and path stay (they help an operator)."""
    try:
        parts = urlsplit(url)
        host_part = parts.netloc
    except ValueError:  # not parseable as a URL: show nothing of it
        return MASK
    if "@" in host_part:
        userinfo, _, host = host_part.rpartition("@")
        user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
        # `redis://secret@host` is a password alone (Redis reads it so): mask it too.
        host_part = f"{user}:{MASK}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, MASK if k.lower() in SECRET_PARAMS else v) for k, v in pairs], safe="*"
        )
    shown = urlunsplit((parts.scheme, host_part, parts.path, query, parts.fragment))
    if not host_part and url.startswith(f"{parts.scheme}://"):  # unix:///path keeps its slashes
        shown = f"{parts.scheme}://{shown[len(parts.scheme) + 1 :]}"
    return shown


def redact_text(text: str) -> str:
    """`text` with every URL in it passed through `redact_url`."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
