#!/usr/bin/env bash
# Install the headless browser that scripts/check_site.py drives.
#
# check_site.py drives this system Chromium with Playwright (the `playwright`
# pip package, in the `book` extra) through chromium.launch(executable_path=...),
# so only the Debian `chromium` package is needed here: no chromedriver and no
# `playwright install` browser download. Idempotent; safe to re-run.
#
# It also puts a local copy of MathJax 3 (npm package `mathjax`, if npm is
# available) into ~/.cache/decinv/mathjax, which check_site.py uses instead of
# the CDN, so the math check works without network access. Skip that with
# --no-mathjax.
#
# Usage: scripts/install_browser.sh [--no-mathjax]   (as root, or with sudo)
set -euo pipefail

WANT_MATHJAX=1
[ "${1:-}" = "--no-mathjax" ] && WANT_MATHJAX=0
MATHJAX_PREFIX="${DECINV_MATHJAX_PREFIX:-$HOME/.cache/decinv/mathjax}"

install_mathjax() {
    [ "$WANT_MATHJAX" = 1 ] || return 0
    if [ -f "$MATHJAX_PREFIX/node_modules/mathjax/es5/tex-mml-chtml.js" ]; then
        echo "MathJax copy already in $MATHJAX_PREFIX"
        return 0
    fi
    if ! command -v npm >/dev/null 2>&1; then
        echo "note: npm not found; check_site.py will load MathJax from its CDN (needs network)"
        return 0
    fi
    mkdir -p "$MATHJAX_PREFIX"
    npm install --silent --no-audit --no-fund --prefix "$MATHJAX_PREFIX" mathjax@3
    echo "MathJax copy installed in $MATHJAX_PREFIX/node_modules/mathjax"
}

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
    install_mathjax
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
install_mathjax
