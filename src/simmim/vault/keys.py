"""Key hierarchy of the vault (envelope encryption), all from `cryptography`.

::

    KEK (key-encryption key): Argon2id(passphrase, salt) | a 32-byte key file | $SIMMIM_VAULT_KEY
     ├── wraps the vault secret (32 random bytes) ── HKDF ──> index key (pseudonyms, tombstones, token HMACs)
     └── wraps each subject's data keys (32 random bytes per version) ──> AES-256-GCM of that subject's records

The KEK is never stored. Wrapping is AES-256-GCM under the KEK with a random 96-bit nonce and
associated data naming what is wrapped (``dek|subject ref|version|kek id``), so a wrapped key
moved to another subject fails to unwrap. Rotating the KEK rewraps the vault secret and the data
keys; records are not re-encrypted.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from simmim.errors import VaultError

KEY_BYTES = 32
NONCE_BYTES = 12
SALT_BYTES = 16
KEY_ENV = "SIMMIM_VAULT_KEY"  # base64 (or hex) of a 32-byte KEK
PASSPHRASE_ENV = "SIMMIM_VAULT_PASSPHRASE"
MIN_PASSPHRASE_CHARS = 12


@dataclass(frozen=True)
class Argon2Cost:
    """Argon2id parameters (RFC 9106's second recommended option by default: 64 MiB, 3 passes)."""

    memory_kib: int = 64 * 1024
    iterations: int = 3
    lanes: int = 4


@dataclass(frozen=True)
class KeySource:
    """Where the KEK comes from: a passphrase (through Argon2id) or raw key bytes (key file, environment).

    Build one with `passphrase`, `key_file` or `from_environment`; `describe` is what the vault stores.
    """

    kind: str  # "passphrase" | "key"
    secret: bytes = field(repr=False)
    cost: Argon2Cost = Argon2Cost()

    @classmethod
    def passphrase(cls, passphrase: str, cost: Argon2Cost | None = None) -> KeySource:
        if not isinstance(passphrase, str) or len(passphrase) < MIN_PASSPHRASE_CHARS:
            raise VaultError(f"the vault passphrase must have at least {MIN_PASSPHRASE_CHARS} characters")
        return cls("passphrase", passphrase.encode("utf-8"), cost or Argon2Cost())

    @classmethod
    def key(cls, key: bytes) -> KeySource:
        if len(key) != KEY_BYTES:
            raise VaultError(f"a vault key must be {KEY_BYTES} bytes, got {len(key)}")
        return cls("key", bytes(key))

    @classmethod
    def key_file(cls, path: str | Path) -> KeySource:
        """A file holding 32 raw bytes, or their base64 or hex on one line."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise VaultError(f"cannot read the vault key file {path}: {exc.strerror or exc}") from None
        return cls.key(_decode_key(data, f"key file {path}"))

    @classmethod
    def from_environment(cls) -> KeySource:
        """``$SIMMIM_VAULT_KEY`` (base64 or hex key) if set, else ``$SIMMIM_VAULT_PASSPHRASE``."""
        if os.environ.get(KEY_ENV):
            return cls.key(_decode_key(os.environ[KEY_ENV].encode(), f"${KEY_ENV}"))
        if os.environ.get(PASSPHRASE_ENV):
            return cls.passphrase(os.environ[PASSPHRASE_ENV])
        raise VaultError(f"no vault key: set ${KEY_ENV} or ${PASSPHRASE_ENV}, or give --key-file")

    def describe(self, salt: bytes) -> dict:
        """What the vault stores to derive the same KEK later: never the secret."""
        if self.kind == "key":
            return {"kind": "key"}
        cost = self.cost
        return {"kind": "passphrase", "kdf": "argon2id", "salt": salt.hex(), "memory_kib": cost.memory_kib,
                "iterations": cost.iterations, "lanes": cost.lanes}

    def derive(self, stored: dict) -> bytes:
        """The KEK, with the parameters the vault stored at `describe` time."""
        if stored.get("kind") != self.kind:
            raise VaultError(f"this vault is unlocked by a {stored.get('kind')}, not a {self.kind}; "
                             f"give the {'passphrase' if stored.get('kind') == 'passphrase' else 'key file'}")
        if self.kind == "key":
            return self.secret
        kdf = Argon2id(salt=bytes.fromhex(stored["salt"]), length=KEY_BYTES, iterations=stored["iterations"],
                       lanes=stored["lanes"], memory_cost=stored["memory_kib"])
        return kdf.derive(self.secret)


def _decode_key(data: bytes, what: str) -> bytes:
    """Raw 32 bytes, or their hex or base64 (surrounding whitespace ignored)."""
    if len(data) == KEY_BYTES:
        return data
    text = data.strip()
    candidates = []
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        candidates.append(bytes.fromhex(text.decode("ascii")))
    with contextlib.suppress(ValueError, binascii.Error):
        candidates.append(base64.b64decode(text, validate=True))
    for key in candidates:
        if len(key) == KEY_BYTES:
            return key
    raise VaultError(f"{what} does not hold a {KEY_BYTES}-byte key (raw, hex or base64)")


def new_key() -> bytes:
    """32 bytes from the OS CSPRNG."""
    return os.urandom(KEY_BYTES)


def write_key_file(path: str | Path) -> Path:
    """Writes a new random KEK as base64 to a file readable by its owner only; refuses to overwrite."""
    return write_secret_file(path, base64.b64encode(new_key()) + b"\n", "key file")


def write_secret_file(path: str | Path, content: bytes, what: str) -> Path:
    """Creates `path` readable by its owner only (0600, created exclusively: never overwrites) with `content`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise VaultError(f"{path} exists; not overwriting a {what}") from None
    except OSError as exc:
        raise VaultError(f"cannot write the {what} {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    return path


def new_salt() -> bytes:
    return os.urandom(SALT_BYTES)


class KeyWrapper:
    """Wraps and unwraps keys under one KEK; holds one cipher object for a batch of keys."""

    def __init__(self, kek: bytes) -> None:
        self._aead = AESGCM(kek)

    def wrap(self, key: bytes, associated: bytes) -> bytes:
        """``nonce || AES-256-GCM(kek, key, associated)`` with a fresh random nonce."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, key, associated)

    def unwrap(self, wrapped: bytes, associated: bytes) -> bytes | None:
        """The wrapped key, or None if the KEK is wrong or the wrapped key or its associated data changed."""
        try:
            return self._aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], associated)
        except (InvalidTag, ValueError):
            return None


def wrap(kek: bytes, key: bytes, associated: bytes) -> bytes:
    return KeyWrapper(kek).wrap(key, associated)


def unwrap(kek: bytes, wrapped: bytes, associated: bytes) -> bytes | None:
    return KeyWrapper(kek).unwrap(wrapped, associated)


def secret_context(vault_id: str, kek_id: str) -> bytes:
    return _context("vault-secret", vault_id, kek_id)


def data_key_context(subject_ref: str, version: int, kek_id: str) -> bytes:
    return _context("dek", subject_ref, str(version), kek_id)


def _context(*parts: str) -> bytes:
    # A JSON array keeps the parts apart whatever characters they hold; built from the JSON string
    # encoder directly (the bytes `json.dumps(parts, separators=(",", ":"))` gives, without its overhead).
    return ("simmim-vault/v1/[" + ",".join(map(encode_basestring_ascii, parts)) + "]").encode()


def index_key(vault_secret: bytes) -> bytes:
    """The key of every keyed hash in the vault (pseudonyms, tombstones, token digests)."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=b"simmim-vault/index-key").derive(
        vault_secret)
