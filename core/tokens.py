"""Client tokens: signed, expiring JWTs (HS256) that admit one rep to one conversation."""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import jwt

from core.data_dir import DataDirError, prepare_data_dir
from core.settings import SECRET_FILE_NAME, Settings

logger = logging.getLogger(__name__)

ALGORITHM: Final = "HS256"
MIN_SECRET_BYTES: Final = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash
GENERATED_SECRET_BYTES: Final = 32
MAX_CONVERSATION_ID_CHARS: Final = 256
DEFAULT_LEEWAY_S: Final = 5.0  # tolerated clock skew between the signer and the gateway
# A rep key's audience: a token with any `aud` is never accepted as a conversation token.
REP_KEY_AUDIENCE: Final = "teleprompter:rep"
MAX_REP_NAME_CHARS: Final = 128

TokenErrorReason = Literal[
    "missing", "malformed", "bad_signature", "expired", "not_yet_valid", "wrong_conversation"
]


class TokenError(Exception):
    """A token does not admit its bearer; `reason` says why (never shown to the client)."""

    def __init__(self, reason: TokenErrorReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: TokenErrorReason = reason


class SecretError(Exception):
    """No usable signing secret: not configured, not on disk, or too short."""


@dataclass(frozen=True, kw_only=True)
class TokenClaims:
    """What a valid token says: who may join which conversation, and until when."""

    conversation_id: str
    rep: str | None
    issued_at: int
    expires_at: int
    authenticated_at: int = 0
    """When the chain of renewals this token belongs to began (its first `iat`)."""


@dataclass(frozen=True, kw_only=True)
class RepClaims:
    """What a valid rep key says: which rep signed in, until when."""

    rep: str
    issued_at: int
    expires_at: int


def secret_path(settings: Settings) -> Path:
    """Where the generated secret lives when TELEPROMPTER_SECRET is not set."""
    return settings.data_dir / SECRET_FILE_NAME


def resolve_secret(settings: Settings, *, create: bool = False) -> bytes:
    """The signing key: TELEPROMPTER_SECRET, else `<data_dir>/secret` (created 0600 if asked)."""
    if settings.secret is not None:
        return settings.secret.get_secret_value().encode()
    path = secret_path(settings)
    if create:
        _create_secret_file(path)
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise SecretError(
            f"no signing secret: set TELEPROMPTER_SECRET, or run `teleprompter up` with this "
            f"data dir to create {path}"
        ) from None
    except OSError as exc:
        raise SecretError(f"cannot read the signing secret {path}: {exc.strerror}") from None
    if path.stat().st_mode & 0o077:
        logger.warning("signing secret %s is readable by other users; chmod 600 it", path)
    return secret.encode()


def _create_secret_file(path: Path) -> None:
    try:
        prepare_data_dir(path.parent)
    except DataDirError as exc:
        raise SecretError(str(exc)) from None
    try:
        # O_EXCL: two processes starting at once must not overwrite each other's secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(secrets.token_urlsafe(GENERATED_SECRET_BYTES) + "\n")
    logger.info("created a new token signing secret at %s", path)


class TokenSigner:
    """Issues and verifies client tokens with one HMAC key."""

    def __init__(self, secret: bytes, *, leeway_s: float = DEFAULT_LEEWAY_S) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise SecretError(
                f"the token signing secret must be at least {MIN_SECRET_BYTES} bytes "
                f"(got {len(secret)}); TELEPROMPTER_SECRET is too short"
            )
        self._secret = secret
        self._leeway_s = leeway_s

    @property
    def leeway_s(self) -> float:
        """Clock skew tolerated: a token is accepted until this long after its expiry."""
        return self._leeway_s

    def issue(
        self,
        conversation_id: str,
        *,
        ttl_s: float,
        rep: str | None = None,
        now: float | None = None,
        authenticated_at: int | None = None,
    ) -> str:
        """A token admitting `rep` to `conversation_id` for `ttl_s` seconds from `now`.

        A renewed token passes on `authenticated_at` from the one it replaces, so the chain's
        age stays known (the gateway caps it).
        """
        _check_conversation_id(conversation_id)
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive (got {ttl_s})")
        issued_at = int(time.time() if now is None else now)
        claims: dict[str, object] = {
            "sub": conversation_id,  # the subject of a token is the conversation it admits to
            "iat": issued_at,
            "exp": issued_at + max(1, round(ttl_s)),
        }
        if rep is not None:
            claims["rep"] = rep
        if authenticated_at is not None:
            claims["auth_time"] = authenticated_at  # the OpenID Connect claim of that name
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def issue_rep_key(self, rep: str, *, ttl_s: float, now: float | None = None) -> str:
        """A rep key: signs `rep` in (to start conversations), never admits to one itself."""
        if not rep or len(rep) > MAX_REP_NAME_CHARS:
            raise ValueError(f"a rep name must be 1 to {MAX_REP_NAME_CHARS} characters")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive (got {ttl_s})")
        issued_at = int(time.time() if now is None else now)
        claims: dict[str, object] = {
            "sub": rep,
            "aud": REP_KEY_AUDIENCE,
            "iat": issued_at,
            "exp": issued_at + max(1, round(ttl_s)),
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify_rep_key(self, token: str | None) -> RepClaims:
        """The rep key's claims if it is genuine and current; conversation tokens are refused."""
        if not token:
            raise TokenError("missing", "no rep key given")
        claims = self._decode(token, audience=REP_KEY_AUDIENCE)
        return RepClaims(
            rep=str(claims["sub"]), issued_at=int(claims["iat"]), expires_at=int(claims["exp"])
        )

    def verify(self, token: str | None, *, conversation_id: str | None) -> TokenClaims:
        """The token's claims if it is genuine, current and bound to `conversation_id`."""
        if not token:
            raise TokenError("missing", "no token given")
        claims = self._decode(token)
        rep = claims.get("rep")
        if rep is not None and not isinstance(rep, str):
            raise TokenError("malformed", "claim 'rep' must be a string")
        if not conversation_id:
            raise TokenError("wrong_conversation", "no conversation_id given")
        if claims["sub"] != conversation_id:
            raise TokenError("wrong_conversation", "the token is for another conversation")
        authenticated_at = claims.get("auth_time", claims["iat"])
        if isinstance(authenticated_at, bool) or not isinstance(authenticated_at, int):
            raise TokenError("malformed", "claim 'auth_time' must be an integer")
        return TokenClaims(
            conversation_id=claims["sub"],
            rep=rep,
            issued_at=int(claims["iat"]),
            expires_at=int(claims["exp"]),
            authenticated_at=authenticated_at,
        )

    def _decode(self, token: str, *, audience: str | None = None) -> dict[str, Any]:
        required = ["sub", "iat", "exp"] if audience is None else ["sub", "iat", "exp", "aud"]
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=audience,
                leeway=self._leeway_s,
                options={"require": required},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("expired", "the token has expired") from None
        except jwt.InvalidSignatureError:
            raise TokenError("bad_signature", "the token's signature does not match") from None
        except jwt.ImmatureSignatureError:
            raise TokenError("not_yet_valid", "the token was issued in the future") from None
        except jwt.InvalidAudienceError:
            raise TokenError("malformed", "the token is for another use") from None
        except jwt.InvalidTokenError as exc:
            raise TokenError("malformed", str(exc)) from None
        if not isinstance(claims.get("sub"), str):
            raise TokenError("malformed", "claim 'sub' must be a string")
        return claims


def _check_conversation_id(conversation_id: str) -> None:
    if not conversation_id or len(conversation_id) > MAX_CONVERSATION_ID_CHARS:
        raise ValueError(
            f"a conversation id must be 1 to {MAX_CONVERSATION_ID_CHARS} characters "
            f"(got {len(conversation_id)})"
        )
