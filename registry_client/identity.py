"""Who a request comes from, as the registry client hands it to the S3 edge.

A leaf module: the S3 edge imports these types without importing the registry
client's storage or the registry itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Credential:
    access_key: str
    secret_key: str
    owner_id: str
    display_name: str


class CredentialLookup(Protocol):
    def get(self, access_key: str) -> Credential | None: ...
