"""Encryption of stored payloads with ``cryptography``'s Fernet (the ``crypto`` extra).

``cryptography`` is imported when a :class:`FernetWrapper` is made, not with this module, so
the producer install stays light for those that do not use it.
"""

from __future__ import annotations

from typing import Any

from workflows.codec import PayloadWrapper
from workflows.errors import ConfigurationError, SerializationError


class FernetWrapper(PayloadWrapper):
    """Fernet (AES-128-CBC + HMAC-SHA256, with a timestamp) over each payload's JSON text.

    ``key``: a key from ``Fernet.generate_key()`` (bytes or str), a ``Fernet``, or a
    ``MultiFernet`` to rotate keys (it encrypts with the first and decrypts with any).
    """

    scheme = "fernet"

    def __init__(self, key: Any) -> None:
        try:
            from cryptography.fernet import Fernet, MultiFernet
        except ImportError:
            raise ConfigurationError(
                "FernetWrapper needs the cryptography package: pip install 'workflows-core[crypto]'"
            ) from None
        if isinstance(key, Fernet | MultiFernet):
            self._fernet: Fernet | MultiFernet = key
        else:
            try:
                self._fernet = Fernet(key)
            except (TypeError, ValueError):
                # Never the key itself in the message.
                raise ConfigurationError(
                    "FernetWrapper: the key is not a Fernet key (32 url-safe base64-encoded "
                    "bytes, as Fernet.generate_key() makes), a Fernet or a MultiFernet"
                ) from None

    def wrap(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode("ascii")

    def unwrap(self, data: str) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(data.encode("ascii")).decode()
        except (InvalidToken, UnicodeError, ValueError):
            raise SerializationError(
                "an encrypted payload cannot be decrypted with this codec's key "
                "(a different or rotated-out key, or corrupted data)"
            ) from None

    def __repr__(self) -> str:
        return "FernetWrapper(<key>)"


__all__ = ["FernetWrapper"]
