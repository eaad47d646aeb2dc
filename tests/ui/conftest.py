"""The browser fixtures live in tests/browser.py (a plugin of the whole suite, see tests/conftest.py):
one Chromium for every browser test, whatever its folder."""
