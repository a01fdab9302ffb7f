#!/usr/bin/env bash
# Install the headless browser that scripts/check_site.py drives.
#
# check_site.py talks to Chromium over the DevTools protocol on a pipe
# (--remote-debugging-pipe), so only the Debian `chromium` package is needed:
# no chromedriver, no selenium, no pip packages. Idempotent; safe to re-run.
# Usage: scripts/install_browser.sh        (as root, or with sudo available)
set -euo pipefail

find_browser() {
    for b in "${CHROMIUM:-}" chromium chromium-browser google-chrome google-chrome-stable; do
        if [ -n "$b" ] && command -v "$b" >/dev/null 2>&1; then
            command -v "$b"
            return 0
        fi
    done
    return 1
}

if path=$(find_browser); then
    echo "browser already installed: $path ($("$path" --version 2>/dev/null || echo '?'))"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "error: need root (or sudo) to apt-get install chromium" >&2; exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
path=$(find_browser)
echo "installed: $path ($("$path" --version 2>/dev/null || echo '?'))"
