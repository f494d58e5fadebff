"""The one admin check of the management API: every route under `/api/policy-gateway/`,
history included, authorizes its caller here.

Who is an admin, and of what:
- the configured `[admin]` token (compared in constant time): every account;
- a JWT carrying the configured super-admin role (`[jwt] super_admin_role`): every account;
- a JWT carrying the admin role (`[jwt] admin_role`): only its own account's projects, keys,
  usage, simulations and events. Another account's resource gets the same answer as a missing
  one (404), so an admin cannot even learn which ids exist elsewhere.

Policies are files shared by every account: any admin may read and check them, but writing one
changes the governance of other accounts' projects, so it needs an admin of every account.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from gateway.datadir import NO_ADMIN_TOKEN, WRONG_ADMIN_TOKEN
from gateway.errors import AdminRequired, InvalidApiKey, InvalidToken
from gateway.identity.jwt import looks_like_jwt
from gateway.identity.keys import credential_from_headers


@dataclass(frozen=True, slots=True)
class Admin:
    """An authorized management caller."""

    #: `admin` for the admin token, the JWT `sub` otherwise (revision events name it).
    user_id: str
    #: The one account this admin manages; None for an admin of every account.
    account_id: str | None

    @property
    def is_global(self) -> bool:
        return self.account_id is None

    def manages(self, account_id: str | None) -> bool:
        """Whether a resource of `account_id` is this admin's to see and change."""
        return self.account_id is None or self.account_id == account_id

    def require_global(self, what: str) -> None:
        if not self.is_global:
            raise AdminRequired(f"{what} needs the admin token or the super-admin role: "
                                "it affects every account.")


def authorize_admin(state: Any, headers: Any) -> Admin:
    """The admin behind `headers`; raises 401 without a valid credential and 403 for a valid
    one that is not an admin's."""
    credential = credential_from_headers(headers)
    token = state.config.admin_token
    if credential is None:
        raise InvalidToken(NO_ADMIN_TOKEN if not token else
                           "Management endpoints need 'Authorization: Bearer <admin token>' "
                           "(`python -m gateway admin-token` prints it).")
    if token and hmac.compare_digest(credential.encode(), token.encode()):
        return Admin(user_id="admin", account_id=None)
    if looks_like_jwt(credential) and state.jwt is not None:
        caller = state.authenticate(credential)  # InvalidToken (401) when bad or expired
        user = caller.jwt
        if user is not None and user.is_super_admin:
            return Admin(user_id=str(caller.user_id), account_id=None)
        if user is not None and user.is_admin:
            return Admin(user_id=str(caller.user_id), account_id=caller.account.id)
        raise AdminRequired("This token's user does not have the admin role.")
    try:
        state.authenticate(credential)  # 401 for an unknown or revoked key
    except InvalidApiKey:
        raise InvalidApiKey(NO_ADMIN_TOKEN if not token else WRONG_ADMIN_TOKEN) from None
    raise AdminRequired("API keys cannot use the management API; use the admin token.")
