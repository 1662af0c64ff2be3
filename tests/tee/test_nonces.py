"""Challenge nonces: usable once, within their TTL, and still refused after the store is reopened (a broker
restart does not reopen replay)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from simmim.tee import AttestationError, NonceStore

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def store_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'nonces.db'}"


def test_a_nonce_is_good_once(store_url):
    store = NonceStore(store_url)
    nonce = store.issue(NOW, ttl_seconds=60)
    assert len(nonce) == 32
    assert store.consume(nonce, NOW + timedelta(seconds=10)) is None
    assert store.consume(nonce, NOW + timedelta(seconds=11)).startswith("replayed nonce")
    store.close()


def test_an_expired_nonce_is_stale_and_burnt(store_url):
    store = NonceStore(store_url)
    nonce = store.issue(NOW, ttl_seconds=60)
    assert store.consume(nonce, NOW + timedelta(seconds=61)).startswith("stale nonce")
    assert store.consume(nonce, NOW + timedelta(seconds=62)).startswith("replayed nonce")
    store.close()


def test_unknown_and_malformed_nonces_are_refused(store_url):
    store = NonceStore(store_url)
    assert store.consume(bytes(32), NOW).startswith("unknown nonce")
    assert store.consume(b"short", NOW) == "the nonce must be 32 bytes, got 5"
    store.close()


def test_replay_is_refused_after_a_restart(store_url):
    first = NonceStore(store_url)
    used, unused = first.issue(NOW, 300), first.issue(NOW, 300)
    assert first.consume(used, NOW) is None
    first.close()
    second = NonceStore(store_url)  # a new process, same database
    assert second.consume(used, NOW).startswith("replayed nonce")
    assert second.consume(unused, NOW) is None
    second.close()


def test_expired_nonces_are_forgotten_when_new_ones_are_issued(store_url):
    store = NonceStore(store_url)
    old = store.issue(NOW, ttl_seconds=1)
    store.issue(NOW + timedelta(hours=1), ttl_seconds=1)
    assert store.consume(old, NOW + timedelta(hours=1)).startswith("unknown nonce")
    store.close()


def test_an_unusable_database_is_a_clear_error(tmp_path):
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(AttestationError, match="nonce store"):
        NonceStore(f"sqlite:///{tmp_path / 'dir.db'}").issue(NOW, 60)
