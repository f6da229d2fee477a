"""TIKKA_REQUIRE_AUTH: the gateway does not start without keys (docker/k8s sets it)."""

from __future__ import annotations

import json

import pytest

from tests import helpers


def test_required_auth_without_keys_refuses_to_start(default_model):
    with pytest.raises(RuntimeError, match="TIKKA_REQUIRE_AUTH is set and TIKKA_API_KEYS is empty"):
        with helpers.configured_gateway(TIKKA_REQUIRE_AUTH="true", TIKKA_API_KEYS="[]"):
            pass


def test_required_auth_with_keys_starts_and_asks_for_them(default_model, photo):
    with helpers.configured_gateway(TIKKA_REQUIRE_AUTH="true", TIKKA_API_KEYS=json.dumps(["k"])) as client:
        files = {"image": ("p.jpg", photo("pizza.jpg"), "image/jpeg")}
        assert client.post("/predict", files=files).status_code == 401
        assert client.post("/predict", files=files, headers={"X-API-Key": "k"}).status_code == 200
