"""The registry's store: users and their access keys, in SQLite.

Secrets must be readable to verify SigV4 HMACs, so the file is created with mode
0600 and secrets never appear in logs.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import string
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

ACCESS_KEY_ALPHABET = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class AccessKey:
    access_key: str
    secret_key: str
    user_id: str
    display_name: str


def generate_access_key() -> str:
    return "MK" + "".join(secrets.choice(ACCESS_KEY_ALPHABET) for _ in range(18))


def generate_secret_key() -> str:
    alphabet = string.ascii_letters + string.digits + "+/"
    return "".join(secrets.choice(alphabet) for _ in range(40))


class RegistryStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        self._lock = threading.Lock()
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        self.db = sqlite_utils.Database(conn)
        if "users" not in self.db.table_names():
            self.db["users"].create({"id": str, "display_name": str, "created_ms": int}, pk="id")
        if "access_keys" not in self.db.table_names():
            self.db["access_keys"].create(
                {"access_key": str, "secret_key": str, "user_id": str, "created_ms": int},
                pk="access_key", foreign_keys=[("user_id", "users", "id")],
            )

    def close(self) -> None:
        self.db.conn.close()

    def ensure_user(self, user_id: str, display_name: str) -> None:
        with self._lock:
            self.db["users"].insert(
                {"id": user_id, "display_name": display_name, "created_ms": int(time.time() * 1000)},
                ignore=True,
            )

    def put_access_key(self, access_key: str, secret_key: str, user_id: str) -> None:
        with self._lock:
            self.db["access_keys"].upsert(
                {"access_key": access_key, "secret_key": secret_key, "user_id": user_id,
                 "created_ms": int(time.time() * 1000)},
                pk="access_key",
            )

    def access_keys(self) -> list[AccessKey]:
        with self._lock:
            rows = self.db.execute(
                "SELECT k.access_key, k.secret_key, k.user_id, u.display_name "
                "FROM access_keys k JOIN users u ON u.id = k.user_id ORDER BY k.created_ms"
            ).fetchall()
        return [AccessKey(*r) for r in rows]
