#!/usr/bin/env bash
# The Python package's tests (bindings/python/tests) against a build tree's libcvene.so, without
# installing anything. Usage: tools/pytest.sh [BUILD_DIR] [pytest args...]
# The interpreter: $CVENE_PYTHON, else the first of python3, /usr/bin/python3 with numpy and
# pytest (tools/install_deps.sh installs Debian's); exit 77 (ctest: skipped) when there is none.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build}" && pwd) || exit 1
shift || true
py=""
for cand in ${CVENE_PYTHON:-} python3 /usr/bin/python3; do
  if command -v "$cand" >/dev/null && "$cand" -c "import numpy, pytest" 2>/dev/null; then py=$cand; break; fi
done
if [ -z "$py" ]; then
  echo "SKIP: no python3 with numpy and pytest (apt-get install python3-numpy python3-pytest)"
  exit 77
fi
cd "$root"
CVENE_LIBRARY="$build/libcvene.so" PYTHONPATH="$root/bindings/python" PYTHONDONTWRITEBYTECODE=1 \
  exec "$py" -m pytest -q -p no:cacheprovider "$root/bindings/python/tests" "$@"
