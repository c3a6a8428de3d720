"""The webhook secret (`whsec_` + base64 of 24 to 64 bytes) and the Standard Webhooks
signature the official SDK's `client.webhooks.unwrap` checks:

    webhook-signature: v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">

keyed with the bytes after `whsec_`. The secret is never shown: not in `repr`,
errors or logs (it is registered for redaction).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from gpt4batch.common.errors import ConfigError
from gpt4batch.common.logging import register_secret

PREFIX = "whsec_"
#: Key lengths Standard Webhooks allows.
MIN_KEY, MAX_KEY = 24, 64
HOW_TO_MAKE = 'echo "whsec_$(openssl rand -base64 32)" > FILE'


class WebhookSecret:
    """The signing key of one `whsec_…` secret."""

    def __init__(self, text: str, where: str) -> None:
        """Raises ConfigError naming `where` (never the secret) when `text` is malformed."""
        register_secret(text)
        encoded = text[len(PREFIX) :] if text.startswith(PREFIX) else ""
        register_secret(encoded)
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not MIN_KEY <= len(key) <= MAX_KEY:
            raise ConfigError(
                f"{where}: not a webhook secret: expected '{PREFIX}' and the base64 of "
                f"{MIN_KEY} to {MAX_KEY} random bytes (make one: {HOW_TO_MAKE})"
            )
        self._key = key

    def __repr__(self) -> str:
        return "WebhookSecret(***)"

    def sign(self, webhook_id: str, timestamp: int, body: bytes) -> str:
        """The `webhook-signature` header of one attempt."""
        signed = f"{webhook_id}.{timestamp}.".encode() + body
        digest = hmac.new(self._key, signed, hashlib.sha256).digest()
        return "v1," + base64.b64encode(digest).decode()
