"""Exceptions of our own, caught once at the CLI/API edge and shown as one line."""


class SimMIMError(Exception):
    """Base class: the message is shown to the user as it is, so it must say what to do."""


class ConfigError(SimMIMError):
    """A configuration file or option is invalid; the message names the field."""


class DataError(SimMIMError):
    """A record or file is unusable; the message names the record or file and the problem."""


class CheckpointError(SimMIMError):
    """A checkpoint is missing, incomplete or does not match the requested use."""


class PrivacyError(SimMIMError):
    """A privacy parameter is invalid or a privacy operation cannot be done; the message says which."""


class BudgetExceededError(PrivacyError):
    """A job would take a dataset past its privacy budget; refused before anything runs."""


class VaultError(SimMIMError):
    """A personal-data vault operation is refused or failed; the message names the record, subject or field."""


class CryptoError(SimMIMError):
    """A key, ciphertext or homomorphic operation is invalid or would give a wrong result; refused."""
