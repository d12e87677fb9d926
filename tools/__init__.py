"""Developer scripts (run as ``python tools/<name>.py``); the tests import them from here."""
