"""Any JSON body the embeddings request schema accepts gets a 2xx or a 4xx, never a 5xx: bodies drawn by
Hypothesis from `EmbeddingRequest`'s JSON schema (see test_request_fuzz.py), for embedding and chat models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from mlx_router.app import create_app
from mlx_router.protocol.embeddings import EmbeddingRequest
from tests.api.conftest import make_settings
from tests.api.test_request_fuzz import FUZZ_SETTINGS, _send, bodies

MODELS = st.sampled_from(["tiny-embed"] * 4 + ["tiny-bert", "tiny-a", "ghost", ""])


@pytest.fixture(scope="module")
def fuzz_client(embedding_models_root: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(embedding_models_root)), raise_server_exceptions=False) as client:
        yield client


@FUZZ_SETTINGS
@given(body=bodies(EmbeddingRequest), model=MODELS)
def test_embedding_bodies_never_get_5xx(fuzz_client: TestClient, body: Any, model: str) -> None:
    if isinstance(body, dict):
        body["model"] = model
    _send(fuzz_client, "/v1/embeddings", body)
