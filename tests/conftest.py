"""Test-wide settings and fixtures. On CI (CI=true) hypothesis runs derandomized, so a landing
never depends on a lucky draw; locally every run explores new examples."""
import os

import pytest
from hypothesis import settings

from anycost_emulator import Emulator
from tests.support import TEST_KEY

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def emulator(monkeypatch):
    """The local AnyCost emulator on 127.0.0.1, with the test key in the environment."""
    monkeypatch.setenv("CLOUDZERO_API_KEY", TEST_KEY)
    with Emulator(api_key=TEST_KEY) as emu:
        yield emu
