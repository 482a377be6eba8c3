#!/usr/bin/env bash
# Installs what sipcast needs on Debian 12, and nothing twice.
#   scripts/install-deps.sh run    build + runtime (GStreamer 1.22 dev and plugins)
#   scripts/install-deps.sh test   the above + the real test peers (baresip, kamailio, nginx-rtmp, ffmpeg)
# Idempotent: packages already installed are skipped; apt-get update runs only when something is missing.
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
)

case "$profile" in
  run) wanted=("${run_packages[@]}") ;;
  test|bench) wanted=("${run_packages[@]}" "${test_packages[@]}") ;;
  *) echo "usage: $0 run|test|bench" >&2; exit 2 ;;
esac

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

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found; install the Rust toolchain (rustup) first" >&2
  exit 1
fi
