"""Repository-wide pytest configuration."""


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: long-running test (deselect with -m 'not slow')")
  config.addinivalue_line("markers", "browser: drives headless Chromium (make test-browser)")
