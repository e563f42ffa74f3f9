#!/usr/bin/env bash
# Random-weight benchmark models of real shapes (see make_model.py), on the GPU host.
set -euo pipefail
export PYTHONPATH=/tmp/site:$PWD
[ -d /tmp/tok ] || python3 bench/make_tokenizer.py /tmp/tok 32000 > /dev/null
for shape in "$@"; do
  [ -f /tmp/models/$shape/model.safetensors ] || python3 bench/make_model.py /tmp/models/$shape $shape --tokenizer /tmp/tok
done
ls -la /tmp/models
