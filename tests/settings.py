"""Settings for the test suite: the real settings, with a test-only secret key."""

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # grpc's INFO lines ("Got goaway") are noise here
os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz")

from config.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast user creation

# whitenoise warns on every request when STATIC_ROOT does not exist (no collectstatic in tests)
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405

# Most tests run inside a transaction that is rolled back: PostgreSQL would never deliver the
# notifications that empty the API key cache. tests/accounts/test_keycache.py turns it on
# with committed transactions.
API_KEY_CACHE = False
