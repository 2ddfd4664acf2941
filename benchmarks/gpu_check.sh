#!/usr/bin/env bash
# The prepared GPU check (issue 17), one call of the device tool, under 8 minutes on one H200:
#
#   here, once:   bash tools/gpu_wheels.sh && bash benchmarks/gpu_check.sh --prepare
#   device run:   carry [".whl", ".gpu_cache"], command: bash benchmarks/gpu_check.sh
#
# --prepare copies the GPT-2 BPE files from this machine's asset cache into .gpu_cache/ (git-ignored);
# the device has no internet and none of gymnasium/SB3/pydantic/..., so the wheels in .whl/ travel too.
# Results: $OUT/gpu_check.jsonl (the device tool's $OUT) or benchmarks/results/gpu_check.jsonl.
# Any other arguments go to `python -m benchmarks.gpu_check` (e.g. --dry-run on a CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--prepare" ]]; then
  src="${TEXTENV_CACHE:-$HOME/.cache/textenv}"
  grep -qxF '/.gpu_cache/' .git/info/exclude 2>/dev/null || echo '/.gpu_cache/' >> .git/info/exclude
  mkdir -p .gpu_cache
  cp -r "$src/gpt2-bpe" .gpu_cache/
  python3 - "$src/manifest.json" .gpu_cache/manifest.json <<'PY'
import json, sys
manifest = json.load(open(sys.argv[1]))
json.dump({"gpt2-bpe": manifest["gpt2-bpe"]}, open(sys.argv[2], "w"), indent=1)
PY
  du -sh .gpu_cache .whl 2>/dev/null || true
  exit 0
fi
PY=${PYTHON:-python3}
if [[ -z "${GPU_CHECK_NO_WHEELS:-}" ]] && compgen -G ".whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
[[ -d .gpu_cache ]] && export TEXTENV_CACHE="$PWD/.gpu_cache"
out="${OUT:-benchmarks/results}/gpu_check.jsonl"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec $PY -m benchmarks.gpu_check --out "$out" "$@"
