#!/usr/bin/env bash
# Installs the Debian packages speechlm needs (TTS engines, sox, libsndfile, chromium for the page test) when any is missing.
# Idempotent: does nothing when every tool is already on PATH.
set -euo pipefail
need=()
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v flite >/dev/null || need+=(flite)
command -v text2wave >/dev/null || need+=(festival festvox-kallpc16k)
[ -d /usr/share/festival/voices/english/ked_diphone ] || need+=(festvox-kdlpc16k)
[ -d /usr/share/festival/voices/us/cmu_us_slt_arctic_hts ] || need+=(festvox-us-slt-hts)
command -v sox >/dev/null || need+=(sox)
ldconfig -p 2>/dev/null | grep -q libsndfile || need+=(libsndfile1)
# the web page's browser test drives Debian's chromium with Playwright
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "installing Debian packages: ${need[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "error: need root or sudo to apt-get install ${need[*]}" >&2; exit 1; }
  SUDO=sudo
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
