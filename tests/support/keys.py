"""A credential look-up for unit tests of the signature verifiers."""

from __future__ import annotations

from registry_client.identity import Credential


class Keys:
    """`Keys(AK="secret", ...)`: the CredentialLookup the verifiers take."""

    def __init__(self, **secrets: str) -> None:
        self._secrets = secrets

    def get(self, access_key: str) -> Credential | None:
        secret = self._secrets.get(access_key)
        return None if secret is None else Credential(access_key, secret, "owner", "owner")
