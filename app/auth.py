"""Who a request comes from: the Bearer key checked against `VIDEOPOET_API_KEYS` (as hashes,
see core/keys.py), counted against that key's request rate.

With keys set, every /v1 request needs one, and a key sees only the videos it created (any
other id is a 404, as if it did not exist). Without keys the API is open, which `videopoet
serve` / `api` allow on a loopback address only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import Unauthorized
from core.keys import find_owner
from app.state import AppState, get_state

# What per-caller limits count against when no keys are set: every caller together.
ANONYMOUS = "anonymous"

bearer = HTTPBearer(auto_error=False, description="An API key from VIDEOPOET_API_KEYS.")


@dataclass(frozen=True)
class Caller:
    """The owner id of the request's key, or None when the API is open."""

    owner: str | None

    @property
    def identity(self) -> str:
        return self.owner or ANONYMOUS

    def may_see(self, owner: str | None) -> bool:
        """A keyed caller sees its own videos only; an open API shows every video."""
        return self.owner is None or self.owner == owner


def authenticate(
    state: Annotated[AppState, Depends(get_state)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    """The caller of a /v1 request: 401 without a configured key, 429 past its rate."""
    if not state.api_keys:
        caller = Caller(owner=None)
    else:
        if credentials is None or not credentials.credentials:
            raise Unauthorized(
                "no API key: send `Authorization: Bearer <key>` with a key this server was "
                "given in VIDEOPOET_API_KEYS"
            )
        owner = find_owner(state.api_keys, credentials.credentials)
        if owner is None:
            raise Unauthorized("the API key is not valid on this server")
        caller = Caller(owner=owner)
    state.limits.check_rate("requests", caller.identity, state.settings.rate_limit_per_minute)
    return caller


CallerDep = Annotated[Caller, Depends(authenticate)]
