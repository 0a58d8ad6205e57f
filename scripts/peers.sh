#!/usr/bin/env bash
# The peer tools that the interop tests run side by side with autointerp, each in its own venv under
# .peers/ (never in .venv): Datasette (tests/serve/test_datasette.py), neuronpedia's upload classes
# (tests/query/test_export_neuronpedia.py) and sae-lens (tests/sae/test_interop_saelens.py). A peer that
# cannot be installed is said here, and its test skips with that reason. Run after `make install`:
# sae-lens reuses the project's torch (.venv's site-packages on its path), as a bare torch pulls CUDA.
# Versions are the ones the tests were written against.
set -uo pipefail
cd "$(dirname "$0")/.."
P=.peers
mkdir -p "$P"

peer() {   # name, module to import, pip arguments...
  local name=$1 mod=$2; shift 2
  if [ -x "$P/$name/bin/python" ] && "$P/$name/bin/python" -c "import $mod" >/dev/null 2>&1; then
    return 0
  fi
  rm -rf "${P:?}/$name"
  python3 -m venv "$P/$name" || { echo "peer $name: no venv could be made; its test will skip"; return 0; }
  if [ "$name" = saelens ]; then
    site=$(ls -d "$PWD"/.venv/lib/python3*/site-packages 2>/dev/null | head -1)
    [ -n "$site" ] || { echo "peer saelens: run make install first (it reuses .venv's torch); its test will skip"; return 0; }
    own=$(ls -d "$P/$name"/lib/python3*/site-packages | head -1)
    echo "$site" > "$own/zz_project_venv.pth"
  fi
  "$P/$name/bin/pip" install -q "$@" >/dev/null 2>&1 \
    || echo "peer $name could not be installed (pip install $*): its test will skip"
}

peer datasette datasette "datasette==0.65.5"
peer neuronpedia neuronpedia.np_source "neuronpedia==1.2.1"
peer saelens sae_lens "sae-lens==6.54.12"
