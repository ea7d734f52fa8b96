"""HTTP endpoints that hand out conversation tokens: a new conversation, and a renewal.

- `POST /conversations` with `Authorization: Bearer <rep key>` starts a conversation: a fresh
  id and a token for it, carrying the rep's name. A rep key (`teleprompter token --rep NAME
  --rep-key`) is signed with the same secret as conversation tokens but for another audience,
  so neither can stand in for the other.
- `POST /token` with `Authorization: Bearer <conversation token>` and `conversation_id` (JSON
  body or query) renews a still-valid token: same conversation and rep, a fresh lifetime, but
  never beyond `token_max_lifetime_s` after the chain's first token, so a leaked link dies.

Both answer JSON: `conversation_id`, `token`, `expires_at` (Unix seconds), `rep`; refusals are
401 (or 403 when the renewal limit is reached) with `error` and `message`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any, Final

from aiohttp import hdrs, web

from core.settings import Settings
from core.tokens import TokenClaims, TokenError, TokenSigner

logger = logging.getLogger(__name__)

MIN_RENEWED_TTL_S: Final = 60.0  # a renewal that would buy less than this is refused
MAX_BODY_BYTES: Final = 4096


class ConversationTokens:
    """Issues conversation tokens over HTTP for reps signed in with a rep key."""

    def __init__(self, *, settings: Settings, signer: TokenSigner) -> None:
        self._settings = settings
        self._signer = signer

    async def handle_new_conversation(self, request: web.Request) -> web.Response:
        try:
            rep = self._signer.verify_rep_key(bearer(request))
        except TokenError as exc:
            logger.info("refused a new conversation: %s", exc.reason)
            return _refusal(401, "unauthorized", "a valid rep key is required")
        conversation_id = f"c-{uuid.uuid4().hex[:16]}"
        now = time.time()
        token = self._signer.issue(
            conversation_id, rep=rep.rep, ttl_s=self._settings.token_ttl_s, now=now
        )
        logger.info("rep %s started conversation %s", rep.rep, conversation_id)
        return _issued(
            conversation_id, token, rep.rep, int(now) + round(self._settings.token_ttl_s), 201
        )

    async def handle_renew(self, request: web.Request) -> web.Response:
        conversation_id = request.query.get("conversation_id") or await _body_field(
            request, "conversation_id"
        )
        try:
            claims = self._signer.verify(bearer(request), conversation_id=conversation_id)
        except TokenError as exc:
            logger.info(
                "refused to renew a token for conversation %r: %s",
                (conversation_id or "")[:80],
                exc.reason,
            )
            return _refusal(401, "unauthorized", "a valid token for this conversation is required")
        now = time.time()
        ttl_s = self._renewed_ttl_s(claims, now)
        if ttl_s < MIN_RENEWED_TTL_S:
            return _refusal(
                403,
                "renewal_limit",
                "this link has been renewed for as long as allowed; ask for a new one",
            )
        token = self._signer.issue(
            claims.conversation_id,
            rep=claims.rep,
            ttl_s=ttl_s,
            now=now,
            authenticated_at=claims.authenticated_at,
        )
        return _issued(claims.conversation_id, token, claims.rep, int(now) + round(ttl_s), 200)

    def _renewed_ttl_s(self, claims: TokenClaims, now: float) -> float:
        limit = claims.authenticated_at + self._settings.token_max_lifetime_s
        return min(self._settings.token_ttl_s, limit - now)


def bearer(request: web.Request) -> str | None:
    """The credentials of an `Authorization: Bearer` header, if any."""
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


async def _body_field(request: web.Request, name: str) -> str:
    if not request.can_read_body or (request.content_length or 0) > MAX_BODY_BYTES:
        return ""
    try:
        data: Any = json.loads(await request.text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ""
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""


def _issued(
    conversation_id: str, token: str, rep: str | None, expires_at: int, status: int
) -> web.Response:
    return web.json_response(
        {
            "conversation_id": conversation_id,
            "token": token,
            "expires_at": expires_at,
            "rep": rep,
        },
        status=status,
        headers={hdrs.CACHE_CONTROL: "no-store"},
    )


def _refusal(status: int, error: str, message: str) -> web.Response:
    return web.json_response(
        {"error": error, "message": message},
        status=status,
        headers={hdrs.CACHE_CONTROL: "no-store"},
    )
