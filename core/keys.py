"""API keys as the server keeps them: SHA-256 hashes from `VIDEOPOET_API_KEYS`, and the rule
that an open API (no keys) listens on a loopback address only. Standard library only: the
settings check and the CLI use it."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets

HASH_PREFIX = "sha256:"
# New keys: this prefix, then 32 random bytes in url-safe base64.
KEY_PREFIX = "vp-"
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})
_HEX64 = re.compile(r"[0-9a-f]{64}")


def hash_key(key: str) -> str:
    """The hex SHA-256 of a key: what the server keeps and compares."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def owner_of(digest: str) -> str:
    """The owner id a key's videos are filed under; it does not reveal the key."""
    return "key_" + digest[:16]


def parse_api_keys(value: str | None) -> dict[str, str]:
    """`VIDEOPOET_API_KEYS` as {sha256 hex: owner id}. Entries are keys or "sha256:<hex>",
    separated by commas or whitespace. Raises ValueError for a malformed hash."""
    keys: dict[str, str] = {}
    for entry in re.split(r"[,\s]+", value or ""):
        if not entry:
            continue
        if entry.lower().startswith(HASH_PREFIX):
            digest = entry[len(HASH_PREFIX) :].lower()
            if not _HEX64.fullmatch(digest):
                raise ValueError(
                    "VIDEOPOET_API_KEYS: a hashed key is sha256: and 64 hex digits "
                    "(as `videopoet key` prints)"
                )
        else:
            digest = hash_key(entry)
        keys[digest] = owner_of(digest)
    return keys


def find_owner(keys: dict[str, str], token: str) -> str | None:
    """The owner of a presented key, comparing hashes in constant time."""
    digest = hash_key(token)
    found = None
    for known, owner in keys.items():
        if hmac.compare_digest(known, digest):
            found = owner
    return found


def is_loopback(host: str) -> bool:
    """Whether an address to listen on is reachable from this machine only."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # another host name may resolve to anything


def check_exposure(host: str, api_keys: str | None) -> None:
    """Refuse to serve an open API on an address other machines reach (ValueError)."""
    if not is_loopback(host) and not parse_api_keys(api_keys):
        raise ValueError(
            f"refusing to listen on {host} without API keys: anyone who reaches it could run "
            "and read every video. Set VIDEOPOET_API_KEYS (`videopoet key` makes one), or "
            "listen on 127.0.0.1"
        )
