"""The registry client's credentials: the admin key made once, the cache the S3
edge reads, and the initial credentials from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.store import RegistryStore
from registry_client.credentials import ADMIN_USER, EmbeddedRegistryClient, InitialCredentials, owner_id


@pytest.fixture
def store(tmp_path: Path):
    s = RegistryStore(tmp_path / "registry.db")
    yield s
    s.close()


def test_first_start_generates_one_admin_key_and_keeps_it(store: RegistryStore) -> None:
    client = EmbeddedRegistryClient(store)
    first = client.bootstrap(None)
    assert first.user_id == ADMIN_USER and first.access_key.startswith("MK")
    assert EmbeddedRegistryClient(store).bootstrap(None) == first  # a restart reuses it
    cred = client.get(first.access_key)
    assert cred is not None and cred.secret_key == first.secret_key
    assert cred.owner_id == owner_id(ADMIN_USER) and len(cred.owner_id) == 64
    assert client.get("unknown") is None


def test_initial_credentials_are_added_and_shown(store: RegistryStore) -> None:
    client = EmbeddedRegistryClient(store)
    shown = client.bootstrap(InitialCredentials("AKIAEXAMPLE", "secret-secret"))
    assert (shown.access_key, shown.secret_key) == ("AKIAEXAMPLE", "secret-secret")
    assert client.get("AKIAEXAMPLE") is not None


def test_refresh_sees_keys_added_to_the_registry(store: RegistryStore) -> None:
    client = EmbeddedRegistryClient(store)
    client.bootstrap(None)
    store.put_access_key("LATER", "secret-later", ADMIN_USER)
    assert client.get("LATER") is None  # served from the cache
    client.refresh()
    assert client.get("LATER").secret_key == "secret-later"


@pytest.mark.parametrize("env, message", [
    ({"MESHD_ACCESS_KEY": "abc"}, "set together"),
    ({"MESHD_SECRET_KEY": "12345678"}, "set together"),
    ({"MESHD_ACCESS_KEY": "ab", "MESHD_SECRET_KEY": "12345678"}, "3+"),
    ({"MESHD_ACCESS_KEY": "abc", "MESHD_SECRET_KEY": "1234567"}, "8+"),
])
def test_bad_environment_credentials(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        InitialCredentials.from_env(env)


def test_environment_credentials() -> None:
    assert InitialCredentials.from_env({}) is None
    assert InitialCredentials.from_env({"MESHD_ACCESS_KEY": "abc", "MESHD_SECRET_KEY": "12345678"}) == \
        InitialCredentials("abc", "12345678")


def test_owner_ids_are_stable_and_distinct() -> None:
    assert owner_id("alice") == owner_id("alice") != owner_id("bob")
