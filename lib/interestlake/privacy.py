"""Pseudonymous user ids: a keyed HMAC applied at ingest.

The key never lives in a settings file: ``privacy.key_env`` names the
environment variable that holds it (Airflow passes the password of the
connection ``interestlake_pseudonym_key`` in that variable). The same key maps
the same user id to the same pseudonym on every run; another key gives other
pseudonyms; without the key a pseudonym cannot be linked back to its user id.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping

from interestlake.settings import Settings, SettingsError

PSEUDONYM_PREFIX = "p_"
# Fewer bytes than this make a key that can be guessed.
MIN_KEY_BYTES = 16


class Pseudonymizer:
    """Maps user ids to ``p_<32 hex>`` with HMAC-SHA256 under a secret key.

    Picklable (it travels to the executors inside the ingest function); its repr
    never shows the key.
    """

    def __init__(self, key: bytes):
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a pseudonymisation key needs at least {MIN_KEY_BYTES} bytes")
        self._key = key

    def __call__(self, user_id: str) -> str:
        digest = hmac.new(self._key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()
        return PSEUDONYM_PREFIX + digest[:32]

    def __repr__(self) -> str:
        return "Pseudonymizer(key=<hidden>)"


def pseudonymizer(settings: Settings, env: Mapping[str, str] | None = None) -> Pseudonymizer | None:
    """The configured pseudonymizer, or None when ``privacy.pseudonymize_user_ids`` is off.

    Raises:
        SettingsError: When pseudonymisation is on and the key variable is unset or too short
            (the message names the variable, never its value).
    """
    privacy = settings.privacy
    if not privacy.pseudonymize_user_ids:
        return None
    env = os.environ if env is None else env
    key = env.get(privacy.key_env, "")
    if len(key.encode("utf-8")) < MIN_KEY_BYTES:
        state = "is not set" if not key else f"is shorter than {MIN_KEY_BYTES} bytes"
        raise SettingsError(
            f"privacy.pseudonymize_user_ids is on but the environment variable {privacy.key_env} {state}; "
            "set it to a secret of at least 16 bytes (under Airflow: the password of the connection "
            "interestlake_pseudonym_key)"
        )
    return Pseudonymizer(key.encode("utf-8"))
