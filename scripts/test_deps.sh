#!/usr/bin/env bash
# Run a fast part of the suite against the lowest or newest numpy/xarray/zarr/dask that
# pyproject.toml allows, each in its own virtualenv (.venv-lowest, .venv-newest).
# Usage: scripts/test_deps.sh lowest|newest [pytest args...]   (make test-deps runs both)
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:?usage: scripts/test_deps.sh lowest|newest [pytest args]}
shift
venv=.venv-$kind
python=${PYTHON:-python3}
tests=${DEPS_TESTS:-tests/test_cube.py tests/test_smooth.py tests/test_phenology.py tests/test_runner.py tests/test_convert.py tests/test_fuzz.py}
start=$(date +%s)
test -x "$venv/bin/python" || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip packaging
pins=$("$venv/bin/python" scripts/dep_pins.py "$kind")
echo "[$kind] pins: $pins"
# CPU torch from the local wheel cache first, as `make` does for .venv
"$venv/bin/python" -m pip install -q torch==2.13.0
# the pins go in the same resolve, so every other dependency is chosen to fit them
# shellcheck disable=SC2086
"$venv/bin/python" -m pip install -q -e '.[all]' $pins
"$venv/bin/python" - <<'PY'
import importlib.metadata as m
print("[installed] " + " ".join(f"{n}=={m.version(n)}" for n in ("numpy", "xarray", "zarr", "dask", "pandas", "numba")))
PY
installed=$(date +%s)
set +e
"$venv/bin/python" -m pytest -q -p no:cacheprovider $tests "$@"
status=$?
set -e
end=$(date +%s)
echo "[$kind] install $((installed - start)) s, tests $((end - installed)) s, exit $status"
exit $status
