#!/usr/bin/env bash
# The report test renders report.html in a real headless browser: Debian's Chromium, driven by
# playwright (playwright's own browser download needs a network we do not assume).
# Installs it when missing (root or sudo); otherwise says what to install and fails.
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
  echo "make test needs Chromium for the report.html browser test: install the 'chromium' package (apt-get install chromium)." >&2
  exit 1
fi
echo "make test: installing Debian's chromium for the report.html browser test" >&2
$SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium >/dev/null || {
  echo "make test: could not install chromium (apt-get install -y chromium); the report.html browser test needs it." >&2
  exit 1
}
