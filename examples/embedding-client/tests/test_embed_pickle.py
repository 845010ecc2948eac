"""EmbeddingConfig pickles (to send it to another process: multiprocessing, Ray) and comes back
with the same settings, checked again by its constructor."""

from __future__ import annotations

import pickle

from embed_fake_models import exact

from gilkit_embed import EmbeddingClient, EmbeddingConfig


def test_an_endpoint_config_pickles_with_every_setting() -> None:
    config = EmbeddingConfig.openai(
        api_key="sk-test", model="m", base_url="http://127.0.0.1:9/v1", timeout=7.0, max_retries=5,
        dimensions=64, encoding_format="float", max_batch_size=100, max_concurrency=3, connect_timeout=2.0,
        requests_per_minute=60, tokens_per_minute=1000, rate_limits_from_headers=True,
        circuit_breaker_threshold=None, initial_retry_delay=0.25, max_tokens_per_input=512, max_tokens_per_request=4096,
    )  # fmt: skip
    copy = pickle.loads(pickle.dumps(config))
    assert copy.to_dict() == config.to_dict()
    assert copy.to_dict()["api_key_set"] and copy.to_dict()["circuit_breaker_threshold"] is None
    assert pickle.loads(pickle.dumps(EmbeddingConfig.openai(api_key=""))).to_dict() == EmbeddingConfig.openai(api_key="").to_dict()


def test_a_local_config_pickles_and_its_copy_embeds() -> None:
    config = EmbeddingConfig.local(exact, name="toy", max_batch=8, max_wait_ms=1.5, max_queue=None, batching=False)
    copy = pickle.loads(pickle.dumps(config))
    assert copy.to_dict() == config.to_dict()
    assert EmbeddingClient(copy).embed("hello") == EmbeddingClient(config).embed("hello")
