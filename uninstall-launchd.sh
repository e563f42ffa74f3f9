#!/bin/sh
# Stop mlx-router's launchd agent and remove it (macOS). Logs in ~/Library/Logs/mlx-router and the config
# are kept. A thin wrapper around `python -m mlx_router service uninstall`.
#
#   ./uninstall-launchd.sh [--dry-run]
set -eu

here=$(cd "$(dirname "$0")" && pwd)
if [ "$(uname -s)" != Darwin ]; then
    echo "uninstall-launchd.sh is for macOS. On Linux run: python3 -m mlx_router service uninstall" >&2
    exit 1
fi
if [ -x "$here/.venv/bin/python" ]; then
    python=$here/.venv/bin/python
else
    python=python3
fi

echo "Removing the mlx-router launchd agent (python: $python)"
cd "$here"
"$python" -m mlx_router service uninstall --platform launchd "$@"
case " $* " in
    *" --dry-run "*) echo "(dry run: nothing was changed)"; exit 0 ;;
esac
echo "Done: the agent is stopped and will not start at login. Reinstall with ./install-launchd.sh"
