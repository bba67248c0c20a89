#!/usr/bin/env bash
# The system packages the tests need, in one list, checked before anything else runs.
# `npm test` runs this first (package.json "pretest") and so does .ci/run: a missing tool stops
# the run at once, or is installed when the user can (root with apt-get), instead of failing
# one test after minutes of running.
#
#   MQTT_GUARD_SETUP=auto     (default) install what is missing when root with apt-get, else stop
#   MQTT_GUARD_SETUP=check    never install: stop with the one command to type
#   MQTT_GUARD_SETUP=skip     do not check (e.g. a machine with the tools elsewhere)
set -euo pipefail

# One row per tool: the command (found on PATH, or at the path given after a |), the Debian
# package that gives it, and which tests use it.
PACKAGES=(
  "redis-server|/usr/bin/redis-server   redis-server       Redis standalone, Sentinel and Cluster servers the tests start"
  "mosquitto|/usr/sbin/mosquitto        mosquitto          the broker behind the proxy in the integration tests"
  "mosquitto_passwd|/usr/bin/mosquitto_passwd mosquitto    password files in Mosquitto's own format"
  "mosquitto_pub                        mosquitto-clients  the README's commands, driven by the embedded-broker tests"
  "openssl                              openssl            test certificate authorities"
  "tshark                               tshark             the trace's pcapng export, opened by Wireshark's decoder"
  "chromium                             chromium           the web console in a real browser (playwright-core, no download)"
  "promtool                             prometheus         the shipped alert rules, checked by promtool"
  "python3                              python3            slow admin viewers with a small SO_RCVBUF (Node cannot set it)"
  "prlimit                              util-linux         a proxy started under a low descriptor limit"
  "haproxy|/usr/sbin/haproxy             haproxy            the peer in npm run bench (and its test)"
)

mode=${MQTT_GUARD_SETUP:-auto}
case "$mode" in
  auto|check) ;;
  skip) exit 0 ;;
  *) echo "MQTT_GUARD_SETUP: expected auto, check or skip, got \"$mode\"" >&2; exit 2 ;;
esac

# have CMD|PATH...: on PATH, or one of the given paths is executable
have() {
  local IFS='|' name
  for name in $1; do
    if [[ $name == /* ]]; then [[ -x $name ]] && return 0
    else command -v "$name" >/dev/null 2>&1 && return 0
    fi
  done
  return 1
}

missing=()
scan() {
  missing=()
  local row tool package
  for row in "${PACKAGES[@]}"; do
    read -r tool package _ <<<"$row"
    if ! have "$tool"; then
      [[ " ${missing[*]} " == *" $package "* ]] || missing+=("$package")
    fi
  done
}

scan
[[ ${#missing[@]} -eq 0 ]] && exit 0

install_cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [[ $mode == auto && $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "mqtt-guard tests: installing ${missing[*]} (Debian packages the tests need)"
  export DEBIAN_FRONTEND=noninteractive
  # wireshark-common asks whether non-root users may capture; the answer does not matter here
  echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections 2>/dev/null || true
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" </dev/null
  scan
  if [[ ${#missing[@]} -eq 0 ]]; then echo "mqtt-guard tests: installed; continuing"; exit 0; fi
  echo "mqtt-guard tests: still missing after apt-get: ${missing[*]}" >&2
  exit 1
fi

{
  echo "mqtt-guard tests need these Debian packages, which are not installed: ${missing[*]}"
  echo "Install them, then run the tests again:"
  echo
  if [[ $(id -u) -eq 0 ]]; then echo "  $install_cmd"; else echo "  sudo $install_cmd"; fi
  echo
} >&2
exit 1
