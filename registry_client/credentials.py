"""Credential look-ups for the S3 edge, served from a local cache of the registry.

The cache is what the S3 edge consults on every request (a dict look-up); it is
filled from the registry at start and on `refresh()`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from registry.store import AccessKey, RegistryStore, generate_access_key, generate_secret_key
from registry_client.identity import Credential

ADMIN_USER = "admin"


@dataclass(frozen=True)
class InitialCredentials:
    access_key: str
    secret_key: str

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "InitialCredentials | None":
        env = dict(os.environ) if env is None else env
        ak, sk = env.get("MESHD_ACCESS_KEY"), env.get("MESHD_SECRET_KEY")
        if not ak and not sk:
            return None
        if not ak or not sk:
            raise ValueError("MESHD_ACCESS_KEY and MESHD_SECRET_KEY must be set together")
        if len(ak) < 3 or len(sk) < 8:
            raise ValueError("MESHD_ACCESS_KEY needs 3+ characters and MESHD_SECRET_KEY 8+")
        return cls(ak, sk)


def owner_id(user_id: str) -> str:
    """A stable canonical user id in S3's 64-hex style."""
    return hashlib.sha256(f"meshd-user:{user_id}".encode()).hexdigest()


class EmbeddedRegistryClient:
    """Credentials from the registry embedded in this node."""

    def __init__(self, store: RegistryStore) -> None:
        self._store = store
        self._cache: dict[str, Credential] = {}

    def bootstrap(self, initial: InitialCredentials | None) -> AccessKey:
        """Make sure the admin user has a key (the given one, or a generated one
        on first start); returns the key to show the operator."""
        self._store.ensure_user(ADMIN_USER, ADMIN_USER)
        if initial is not None:
            self._store.put_access_key(initial.access_key, initial.secret_key, ADMIN_USER)
        keys = [k for k in self._store.access_keys() if k.user_id == ADMIN_USER]
        if not keys:
            self._store.put_access_key(generate_access_key(), generate_secret_key(), ADMIN_USER)
            keys = [k for k in self._store.access_keys() if k.user_id == ADMIN_USER]
        self.refresh()
        if initial is not None:
            return next(k for k in keys if k.access_key == initial.access_key)
        return keys[0]

    def refresh(self) -> None:
        self._cache = {
            k.access_key: Credential(k.access_key, k.secret_key, owner_id(k.user_id), k.display_name)
            for k in self._store.access_keys()
        }

    def get(self, access_key: str) -> Credential | None:
        return self._cache.get(access_key)
