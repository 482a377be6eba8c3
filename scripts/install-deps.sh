#!/usr/bin/env bash
# Installs what sipcast needs on Debian 12, and nothing twice.
#   scripts/install-deps.sh run    build + runtime (GStreamer 1.22 dev and plugins)
#   scripts/install-deps.sh test   the above + the real test peers (baresip, kamailio, nginx-rtmp, ffmpeg),
#                                  Chromium, Node.js with playwright-core (tests/browser/node_modules) and
#                                  openapi-spec-validator from PyPI (tests/tools/venv)
#   scripts/install-deps.sh bench  the test set + matplotlib for the plot and perf for profiles (make bench)
# Idempotent: packages already installed are skipped; apt-get update runs only when something is missing;
# the npm and pip steps run only when their result is missing.
set -euo pipefail

profile="${1:-run}"

run_packages=(
  pkg-config build-essential
  libglib2.0-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools
  glib-networking
)
test_packages=(
  baresip-core baresip-ffmpeg kamailio nginx libnginx-mod-rtmp libnginx-mod-stream ffmpeg openssl
  chromium python3-venv
)
bench_packages=(python3 python3-matplotlib linux-perf)

case "$profile" in
  run) wanted=("${run_packages[@]}") ;;
  test) wanted=("${run_packages[@]}" "${test_packages[@]}") ;;
  bench) wanted=("${run_packages[@]}" "${test_packages[@]}" "${bench_packages[@]}") ;;
  *) echo "usage: $0 run|test|bench" >&2; exit 2 ;;
esac

# Node.js and npm: any installation will do (Debian's, or another one already present).
if [ "$profile" != run ] && ! command -v npm >/dev/null 2>&1; then
  wanted+=(nodejs npm)
fi

missing=()
for pkg in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  # Package installs must not start system services (nginx on :80, kamailio on :5060): the tests run
  # their own instances on loopback ports. policy-rc.d is Debian's documented switch for that.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    created_policy=1
  fi
  trap '[ "$created_policy" = 1 ] && $sudo rm -f "$policy"' EXIT
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#wanted[@]} packages present"
fi

root="$(cd "$(dirname "$0")/.." && pwd)"
if [ "$profile" != run ]; then
  # Playwright's library only (no browser download): it drives Debian's /usr/bin/chromium.
  if [ ! -f "$root/tests/browser/node_modules/playwright-core/package.json" ]; then
    echo "install-deps: npm ci in tests/browser"
    (cd "$root/tests/browser" && npm ci --no-audit --no-fund --loglevel=error)
  fi
  # The OpenAPI validator, in a project-local venv of Debian's Python.
  venv="$root/tests/tools/venv"
  if [ ! -x "$venv/bin/openapi-spec-validator" ]; then
    echo "install-deps: openapi-spec-validator into tests/tools/venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/tests/tools/requirements.txt"
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found; install the Rust toolchain (rustup) first" >&2
  exit 1
fi
