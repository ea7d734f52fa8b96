"""`POST /conversations` and `POST /token`: a signed-in rep starts calls, a page renews its link."""

from __future__ import annotations

import time
from typing import Any

import pytest

from core.tokens import TokenSigner
from tests.gateway.conftest import GatewayFactory, RunningGateway, receive_json


async def post(
    gateway: RunningGateway, path: str, bearer: str | None = None, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer is not None else {}
    async with gateway.http.post(f"{gateway.url}{path}", headers=headers, **kwargs) as response:
        assert response.headers["Cache-Control"] == "no-store"
        return response.status, await response.json()


async def test_a_signed_in_rep_starts_a_conversation_and_joins_it(
    shared_gateway: RunningGateway,
) -> None:
    key = shared_gateway.signer.issue_rep_key("ann", ttl_s=600)
    status, body = await post(shared_gateway, "/conversations", key)
    assert status == 201, body
    assert body["rep"] == "ann"
    assert body["conversation_id"].startswith("c-")
    assert body["expires_at"] == pytest.approx(time.time() + 8 * 3600, abs=10)
    claims = shared_gateway.signer.verify(body["token"], conversation_id=body["conversation_id"])
    assert claims.rep == "ann"

    ws = await shared_gateway.http.ws_connect(
        shared_gateway.ws_url(body["conversation_id"], token=body["token"])
    )
    assert (await receive_json(ws))["type"] == "ready"
    await ws.close()

    _, again = await post(shared_gateway, "/conversations", key)
    assert again["conversation_id"] != body["conversation_id"]


@pytest.mark.parametrize(
    "credential",
    [
        None,
        "not-a-jwt",
        TokenSigner(b"another-secret-entirely-0123456789").issue_rep_key("ann", ttl_s=60),
        "conversation-token",  # replaced below: a conversation token is no rep key
    ],
)
async def test_a_new_conversation_needs_a_rep_key(
    shared_gateway: RunningGateway, credential: str | None
) -> None:
    if credential == "conversation-token":
        credential = shared_gateway.token("c-1")
    status, body = await post(shared_gateway, "/conversations", credential)
    assert (status, body["error"]) == (401, "unauthorized")


async def test_a_rep_key_opens_no_conversation_socket(shared_gateway: RunningGateway) -> None:
    key = shared_gateway.signer.issue_rep_key("ann", ttl_s=600)
    ws = await shared_gateway.http.ws_connect(shared_gateway.ws_url("ann", token=key))
    message = await ws.receive(timeout=15)
    assert (message.data, message.extra) == (4001, "Unauthorized")


async def test_a_valid_token_is_renewed_for_its_conversation(
    shared_gateway: RunningGateway,
) -> None:
    old = shared_gateway.signer.issue("conv-r", rep="ann", ttl_s=60)
    status, body = await post(shared_gateway, "/token", old, json={"conversation_id": "conv-r"})
    assert status == 200, body
    claims = shared_gateway.signer.verify(body["token"], conversation_id="conv-r")
    assert (claims.rep, body["conversation_id"]) == ("ann", "conv-r")
    assert claims.expires_at - claims.issued_at == 8 * 3600
    # The query string works too, for clients that cannot send a body.
    status, _ = await post(shared_gateway, "/token?conversation_id=conv-r", body["token"])
    assert status == 200


@pytest.mark.parametrize(
    ("token_for", "ttl_s", "asked_for"),
    [
        ("conv-r", -60.0, "conv-r"),  # expired: renewal is no way back in
        ("conv-other", 60.0, "conv-r"),
        ("conv-r", 60.0, ""),
    ],
)
async def test_renewal_needs_a_current_token_for_that_conversation(
    shared_gateway: RunningGateway, token_for: str, ttl_s: float, asked_for: str
) -> None:
    now = time.time()
    token = shared_gateway.signer.issue(
        token_for, ttl_s=abs(ttl_s), now=now if ttl_s > 0 else now - 3600
    )
    status, body = await post(shared_gateway, "/token", token, json={"conversation_id": asked_for})
    assert (status, body["error"]) == (401, "unauthorized")


async def test_renewals_stop_at_the_maximum_lifetime(gateway_factory: GatewayFactory) -> None:
    gateway = await gateway_factory(token_ttl_s=3600.0, token_max_lifetime_s=7200.0)
    began = int(time.time()) - 7000  # the chain began almost two hours ago
    nearly_done = gateway.signer.issue("conv-m", ttl_s=600, authenticated_at=began)
    status, body = await post(gateway, "/token", nearly_done, json={"conversation_id": "conv-m"})
    assert status == 200
    claims = gateway.signer.verify(body["token"], conversation_id="conv-m")
    assert claims.authenticated_at == began
    assert claims.expires_at == pytest.approx(began + 7200, abs=2)  # capped, not +1 h

    spent = gateway.signer.issue("conv-m", ttl_s=600, authenticated_at=began - 200)
    status, body = await post(gateway, "/token", spent, json={"conversation_id": "conv-m"})
    assert (status, body["error"]) == (403, "renewal_limit")
