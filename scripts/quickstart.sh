#!/usr/bin/env bash
# README's first command: installs what Concord needs, builds it, runs `concord quickstart`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/install-deps.sh"
build="$(CONCORD_TARGETS=concord_cli "$root/scripts/build.sh" debian | tail -n 1)"
exec "$build/bin/concord" quickstart "$@"
