#!/bin/sh
# Debian's chromium for the browser tests (tests/e2e/test_dashboard.py). Playwright drives this browser, so no
# browser build is downloaded from elsewhere (`playwright install` is never run). It installs only where it can:
# as root on a machine with apt-get (CI); anywhere else it says why the browser tests will be skipped.
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
  exit $?
fi
echo "chromium is not installed (Debian: apt-get install chromium); the browser tests will be skipped" >&2
