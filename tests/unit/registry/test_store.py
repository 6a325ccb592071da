"""The registry's store: users and access keys in a private SQLite file."""

from __future__ import annotations

import stat
from pathlib import Path

from registry.store import ACCESS_KEY_ALPHABET, RegistryStore, generate_access_key, generate_secret_key


def test_keys_belong_to_users_and_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    store = RegistryStore(path)
    store.ensure_user("alice", "Alice")
    store.ensure_user("alice", "Renamed")  # already there: kept as it was
    store.put_access_key("AK1", "secret-1", "alice")
    store.put_access_key("AK1", "secret-2", "alice")  # the same key again: replaced
    store.close()
    store = RegistryStore(path)
    try:
        [key] = store.access_keys()
        assert (key.access_key, key.secret_key, key.user_id, key.display_name) == ("AK1", "secret-2", "alice", "Alice")
    finally:
        store.close()


def test_the_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    RegistryStore(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_generated_keys_have_their_shape() -> None:
    keys = {generate_access_key() for _ in range(50)}
    assert len(keys) == 50
    for k in keys:
        assert len(k) == 20 and k.startswith("MK") and set(k[2:]) <= set(ACCESS_KEY_ALPHABET)
    secret = generate_secret_key()
    assert len(secret) == 40 and secret != generate_secret_key()
