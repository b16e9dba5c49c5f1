"""RS256 JWTs for tests: a key pair, its JWKS, and signed tokens (cryptography, no JWT library)."""

from __future__ import annotations

import base64
import json
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int(n: int) -> str:
    return _b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class Signer:
    def __init__(self, kid: str = "k1") -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> str:
        pub = self.key.public_key().public_numbers()
        return json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid, "n": _int(pub.n), "e": _int(pub.e)}]})

    def token(self, claims: dict, *, iss: str = "https://idp.test", aud: str = "aigrid", ttl: int = 600) -> str:
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        now = int(time.time())
        body = {"iss": iss, "aud": aud, "iat": now, "exp": now + ttl, "sub": "client-1", **claims}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(body).encode())}"
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(sig)}"
