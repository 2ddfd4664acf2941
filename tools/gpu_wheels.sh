#!/usr/bin/env bash
# Download, here, the wheels the GPU check needs that the device machine's image lacks (Python 3.12,
# x86-64; see benchmarks/gpu_check.sh). They land in .whl/ (git-ignored through .git/info/exclude) and
# travel with `carry: [".whl"]`. Versions: the ones this project's environment runs.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
PKGS=(
  gymnasium==1.4.0 farama-notifications==0.0.6 stable-baselines3==2.9.2
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  tomli-w==1.2.0 vaderSentiment==3.3.2 rouge-score==0.1.2 nltk==3.10.4
)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLAT[@]}" -d .whl "${PKGS[@]}" 2>/dev/null || {
  # rouge-score ships an sdist only: build its (pure-Python) wheel here
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLAT[@]}" -d .whl $(printf '%s\n' "${PKGS[@]}" | grep -v rouge-score)
  python3 -m pip wheel -q --no-deps -w .whl rouge-score==0.1.2
}
du -sh .whl && ls .whl
