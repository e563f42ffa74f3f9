#!/bin/sh
# Install mlx-router as a launchd user agent on macOS: it starts now, at every login, and again after a crash.
#
#   ./install-launchd.sh [CONFIG] [--dry-run]      CONFIG defaults to ./config.json
#
# This is a thin wrapper around `python -m mlx_router service install`, which does the work (and also handles
# systemd on Linux). It uses this checkout's .venv when there is one, else python3 from PATH.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
config=$PWD/config.json
case ${1:-} in
    '' | -*) ;;  # no config given: options such as --dry-run go straight through
    *) config=$1; shift ;;
esac
case $config in
    /*) ;;
    *) config=$PWD/$config ;;  # relative to where the script was called from, not to the checkout
esac

if [ "$(uname -s)" != Darwin ]; then
    echo "install-launchd.sh is for macOS. On Linux run: python3 -m mlx_router service install --config $config" >&2
    exit 1
fi
if [ -x "$here/.venv/bin/python" ]; then
    python=$here/.venv/bin/python
else
    python=python3
fi

echo "Installing mlx-router as a launchd agent"
echo "  python: $python"
echo "  config: $config"
# Run from the checkout so `-m mlx_router` imports it even when it was never pip-installed.
cd "$here"
"$python" -m mlx_router service install --platform launchd --config "$config" "$@"
case " $* " in
    *" --dry-run "*) echo "(dry run: nothing was changed)"; exit 0 ;;
esac
echo
echo "Done: ~/Library/LaunchAgents/com.mlx-router.server.plist runs the server with the config above."
echo "Check it with: launchctl print gui/$(id -u)/com.mlx-router.server    Remove it: ./uninstall-launchd.sh"
