"""Keys shared by the crypto tests: generated once per session (small keys protect nothing and are
only for speed; the few 2048-bit tests use `keys_2048`)."""

import pytest

from simmim.crypto.paillier import generate_keypair


@pytest.fixture(scope="session")
def keys_1024():
    return generate_keypair(1024, allow_insecure=True)


@pytest.fixture(scope="session")
def keys_512():
    return generate_keypair(512, allow_insecure=True)


@pytest.fixture(scope="session")
def keys_2048():
    return generate_keypair(2048)
