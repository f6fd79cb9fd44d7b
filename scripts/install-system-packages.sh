#!/usr/bin/env bash
# The system packages napari-hq-sam's README commands need on Debian or Ubuntu (apt-get).
#
#   bash scripts/install-system-packages.sh          # as root, or through sudo
#   bash scripts/install-system-packages.sh --print  # only list the packages
#
# The headless install (engine, CLI, Dask) needs only Python with venv. napari and its
# tests also need an X server and the libraries PyQt6's Qt 6 links against: without
# them Qt aborts the whole Python process when it starts its first window. CI
# (.ci/run) runs this script, so this is the one list.
set -euo pipefail

PACKAGES=(
    # a virtual X server for machines without a screen (xvfb-run, pytest-xvfb)
    xvfb xauth
    # OpenGL for napari's canvas (vispy): Mesa's software renderer under Xvfb
    libgl1 libegl1 libgl1-mesa-dri
    # Qt 6's xcb platform plugin and the libraries QtCore/QtGui load
    libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
    libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xfixes0
    libx11-xcb1 libglib2.0-0 libdbus-1-3 libfontconfig1
)
# Debian's and Ubuntu's python3 creates virtual environments only with python3-venv;
# a Python that already can (a python.org or pyenv build, a Docker python image) is kept.
if ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
    PACKAGES+=(python3 python3-venv)
fi

if [[ "${1:-}" == "--print" ]]; then
    printf '%s\n' "${PACKAGES[@]}"
    exit 0
fi

if ! command -v apt-get >/dev/null; then
    echo "install-system-packages.sh: no apt-get here; install the equivalents of:" >&2
    printf '  %s\n' "${PACKAGES[@]}" >&2
    exit 1
fi

SUDO=()
if [[ "$(id -u)" != 0 ]]; then
    SUDO=(sudo)
fi
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
