"""Test-wide settings. On CI (CI=true) hypothesis runs derandomized, so a landing never
depends on a lucky draw; locally every run explores new examples."""
import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
