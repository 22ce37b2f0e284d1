#!/usr/bin/env bash
# Install the Debian packages the tests and benchmarks drive as real clients, when missing.
# Usage: scripts/debian_tools.sh COMMAND=PACKAGE ...   (e.g. promtool=prometheus wrk=wrk)
# Runs as root or through sudo; `apt-get update` only when a first install attempt fails.
set -euo pipefail
missing=()
for pair in "$@"; do
  cmd="${pair%%=*}"; pkg="${pair#*=}"
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/bin/$cmd" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
  || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
