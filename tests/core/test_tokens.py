"""Client tokens: signing, verification failures by reason, secret resolution."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from core.settings import Settings
from core.tokens import (
    SecretError,
    TokenError,
    TokenSigner,
    resolve_secret,
    secret_path,
)
from teleprompter.cli import main

SECRET = b"k" * 32


def test_a_token_admits_its_conversation_and_carries_the_rep() -> None:
    signer = TokenSigner(SECRET)
    before = int(time.time())
    claims = signer.verify(signer.issue("conv-1", rep="ann", ttl_s=60), conversation_id="conv-1")
    assert claims.conversation_id == "conv-1"
    assert claims.rep == "ann"
    assert before <= claims.issued_at <= int(time.time())
    assert claims.expires_at == claims.issued_at + 60


def test_rep_is_optional() -> None:
    signer = TokenSigner(SECRET)
    token = signer.issue("conv-1", ttl_s=60)
    assert signer.verify(token, conversation_id="conv-1").rep is None


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("not-a-jwt", "malformed"),
        ("a.b.c", "malformed"),
    ],
)
def test_unusable_tokens_are_refused_by_reason(token: str | None, reason: str) -> None:
    with pytest.raises(TokenError) as caught:
        TokenSigner(SECRET).verify(token, conversation_id="conv-1")
    assert caught.value.reason == reason


def test_an_expired_token_is_refused() -> None:
    signer = TokenSigner(SECRET, leeway_s=0)
    token = signer.issue("conv-1", ttl_s=10, now=time.time() - 100)
    with pytest.raises(TokenError) as caught:
        signer.verify(token, conversation_id="conv-1")
    assert caught.value.reason == "expired"


def test_a_token_from_the_future_is_refused() -> None:
    signer = TokenSigner(SECRET, leeway_s=0)
    token = signer.issue("conv-1", ttl_s=10_000, now=time.time() + 3600)
    with pytest.raises(TokenError) as caught:
        signer.verify(token, conversation_id="conv-1")
    assert caught.value.reason == "not_yet_valid"


def test_a_token_signed_with_another_key_is_refused() -> None:
    token = TokenSigner(b"x" * 32).issue("conv-1", ttl_s=60)
    with pytest.raises(TokenError) as caught:
        TokenSigner(SECRET).verify(token, conversation_id="conv-1")
    assert caught.value.reason == "bad_signature"


@pytest.mark.parametrize("conversation_id", ["conv-2", "", None])
def test_a_token_does_not_admit_another_conversation(conversation_id: str | None) -> None:
    signer = TokenSigner(SECRET)
    with pytest.raises(TokenError) as caught:
        signer.verify(signer.issue("conv-1", ttl_s=60), conversation_id=conversation_id)
    assert caught.value.reason == "wrong_conversation"


def test_a_token_without_required_claims_is_malformed() -> None:
    token = jwt.encode({"sub": "conv-1"}, SECRET, algorithm="HS256")
    with pytest.raises(TokenError) as caught:
        TokenSigner(SECRET).verify(token, conversation_id="conv-1")
    assert caught.value.reason == "malformed"


def test_the_none_algorithm_is_refused() -> None:
    token = jwt.encode({"sub": "conv-1", "iat": 1, "exp": 2**40}, "", algorithm="none")
    with pytest.raises(TokenError) as caught:
        TokenSigner(SECRET).verify(token, conversation_id="conv-1")
    assert caught.value.reason == "malformed"


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(SecretError, match="at least 32 bytes"):
        TokenSigner(b"short")


@pytest.mark.parametrize(("conversation_id", "ttl_s"), [("", 60), ("x" * 257, 60), ("c", 0)])
def test_issue_checks_its_arguments(conversation_id: str, ttl_s: float) -> None:
    with pytest.raises(ValueError):
        TokenSigner(SECRET).issue(conversation_id, ttl_s=ttl_s)


def test_the_configured_secret_wins(tmp_path: Path) -> None:
    settings = Settings(secret=SecretStr("s" * 40), data_dir=tmp_path)
    assert resolve_secret(settings, create=True) == b"s" * 40
    assert not secret_path(settings).exists()


def test_without_a_configured_secret_one_is_created_private_and_reused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with pytest.raises(SecretError, match="TELEPROMPTER_SECRET"):
        resolve_secret(settings)
    created = resolve_secret(settings, create=True)
    assert len(created) >= 32
    assert stat.S_IMODE(secret_path(settings).stat().st_mode) == 0o600
    assert resolve_secret(settings) == created
    assert resolve_secret(settings, create=True) == created


def test_token_command_prints_a_token_signed_with_the_data_dir_secret(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    secret = resolve_secret(settings, create=True)
    result = CliRunner().invoke(
        main,
        [
            "token",
            "--conversation",
            "conv-9",
            "--rep",
            "bo",
            "--ttl",
            "120",
            "--data-dir",
            str(tmp_path),
        ],
        env={"TELEPROMPTER_SECRET": ""},
    )
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert "\n" not in token
    claims = TokenSigner(secret).verify(token, conversation_id="conv-9")
    assert claims.rep == "bo"
    assert claims.expires_at - claims.issued_at == 120


def test_token_command_without_a_secret_says_how_to_get_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["token", "--conversation", "c", "--data-dir", str(tmp_path)],
        env={"TELEPROMPTER_SECRET": ""},
    )
    assert result.exit_code == 2
    assert "TELEPROMPTER_SECRET" in result.output


# --- rep keys and renewal chains -------------------------------------------------------------


def test_a_rep_key_signs_a_rep_in_and_is_no_conversation_token() -> None:
    signer = TokenSigner(SECRET)
    key = signer.issue_rep_key("ann", ttl_s=60)
    claims = signer.verify_rep_key(key)
    assert (claims.rep, claims.expires_at - claims.issued_at) == ("ann", 60)
    # Its subject is the rep's name, yet it admits to no conversation of that name.
    with pytest.raises(TokenError) as caught:
        signer.verify(key, conversation_id="ann")
    assert caught.value.reason == "malformed"


def test_a_conversation_token_is_no_rep_key() -> None:
    signer = TokenSigner(SECRET)
    with pytest.raises(TokenError) as caught:
        signer.verify_rep_key(signer.issue("conv-1", rep="ann", ttl_s=60))
    assert caught.value.reason == "malformed"
    with pytest.raises(TokenError) as expired:
        signer.verify_rep_key(signer.issue_rep_key("ann", ttl_s=1, now=time.time() - 3600))
    assert expired.value.reason == "expired"


def test_a_renewed_token_remembers_when_its_chain_began() -> None:
    signer = TokenSigner(SECRET)
    first = signer.verify(signer.issue("conv-1", ttl_s=60), conversation_id="conv-1")
    assert first.authenticated_at == first.issued_at
    renewed = signer.issue("conv-1", ttl_s=60, authenticated_at=first.issued_at - 100)
    assert signer.verify(renewed, conversation_id="conv-1").authenticated_at == (
        first.issued_at - 100
    )


def test_the_token_command_prints_a_rep_key(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"TELEPROMPTER_SECRET": SECRET.decode()}
    result = runner.invoke(main, ["token", "--rep", "ann", "--rep-key"], env=env)
    assert result.exit_code == 0, result.output
    assert TokenSigner(SECRET).verify_rep_key(result.output.strip()).rep == "ann"
    for bad in (["token", "--rep-key"], ["token", "--rep", "ann"], ["token"]):
        refused = runner.invoke(main, bad, env=env)
        assert refused.exit_code != 0, bad
