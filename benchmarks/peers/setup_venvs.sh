#!/usr/bin/env bash
# Build the two peer virtualenvs (never runtime dependencies of fusecube).
#   .venv-peers-fusets : numpy 1.23.5, FuseTS 2.0.1, vam.whittaker 2.0.2 built from source,
#                        GPy (FuseTS MOGPR, for the fusion comparison)
#   .venv-peers-timesat: numpy>=2, TIMESAT 4.4.1 (benchmark use only, never shipped), whittaker-eilers
# Each step that fails leaves a marker so the driver can skip that peer with a clear message.
set -u
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}

build_fusets() {
  local v=.venv-peers-fusets
  [ -f $v/.ok ] && return 0
  rm -rf $v && $PYTHON -m venv $v || return 1
  $v/bin/pip install -q numpy==1.23.5 "cython<3" setuptools wheel || return 1
  $v/bin/pip install -q --no-build-isolation vam.whittaker==2.0.2 || return 1
  $v/bin/pip install -q --only-binary :all: numpy==1.23.5 xarray==2024.7.0 pandas==2.3.3 \
      scipy==1.15.3 openeo || return 1
  $v/bin/pip install -q --no-deps fusets==2.0.1 || return 1
  $v/bin/python -c "import fusets, vam.whittaker" || return 1
  touch $v/.ok
}

# GPy for FuseTS MOGPR (fusion comparison): wheels only, numpy kept at FuseTS's 1.23.5.
# Its own marker, so a FuseTS venv built before this step gets it added.
add_gpy() {
  local v=.venv-peers-fusets
  [ -f $v/.ok ] || return 1
  [ -f $v/.ok-gpy ] && return 0
  $v/bin/pip install -q --only-binary :all: numpy==1.23.5 GPy "matplotlib<3.9" || return 1
  $v/bin/python -c "import GPy, fusets.mogpr" || return 1
  touch $v/.ok-gpy
}

build_timesat() {
  local v=.venv-peers-timesat
  [ -f $v/.ok ] && return 0
  rm -rf $v && $PYTHON -m venv $v || return 1
  $v/bin/pip install -q "numpy>=2" whittaker-eilers==0.2.0 || return 1
  $v/bin/pip install -q timesat==4.4.1 || echo "TIMESAT could not be installed: it will be skipped"
  $v/bin/python -c "import whittaker_eilers" || return 1
  touch $v/.ok
}

build_fusets || echo "peer venv .venv-peers-fusets could not be built: FuseTS will be skipped"
add_gpy || echo "GPy could not be added to .venv-peers-fusets: MOGPR will be skipped"
build_timesat || echo "peer venv .venv-peers-timesat could not be built: TIMESAT/whittaker-eilers skipped"
exit 0
