"""`make mutate`: cosmic-ray mutation testing of the core math modules, one module at a time.

Each module of ``tools/mutate.toml`` is mutated in a scratch copy of the working tree (never in place:
other work in the tree and its tests stay untouched), and every mutant runs the module's FAST tests only.
Mutants inside type annotations (``torch.Tensor | None``) are skipped: with ``from __future__ import
annotations`` the annotations are never evaluated, so every such mutant is equivalent.

Usage: ``python tools/mutate.py [MODULE ...] [--all-operators] [--workdir DIR] [--fresh | --recheck]``
(``--recheck``: the survivors of the last session run again, against the tests as they are now). Prints a
per-module table (killed / survived / score) and writes every survivor's diff to
``<workdir>/survivors-<module>.txt``; exits 1 when a module scores under ``--fail-under``.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tools" / "mutate.toml"


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) (line, col) spans of every annotation of ``source``."""
    spans = []
    for node in ast.walk(ast.parse(source)):
        annotations = []
        if isinstance(node, ast.arg) and node.annotation is not None:
            annotations.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            annotations.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
        for a in annotations:
            spans.append(((a.lineno, a.col_offset), (a.end_lineno, a.end_col_offset)))
    return spans


def copy_tree(dest: Path) -> None:
    """The tracked and untracked-but-not-ignored files of the working tree, copied to ``dest``."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    if dest.exists():
        shutil.rmtree(dest)
    for name in filter(None, files):
        src = ROOT / name.decode()
        if src.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def skip(db: Path, module: str, exclude: list[str]) -> int:
    """Mark annotation mutants and excluded operators as skipped; return how many."""
    pattern = re.compile("|".join(f"(?:{e})" for e in exclude)) if exclude else None
    spans = annotation_spans((ROOT / module).read_text())
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT job_id, operator_name, start_pos_row, start_pos_col FROM mutation_specs"
    ).fetchall()
    skipped = []
    for job_id, op, row, col in rows:
        in_annotation = any(s <= (row, col) < e for s, e in spans)
        if in_annotation or (pattern is not None and pattern.search(op)):
            skipped.append((job_id, "annotation" if in_annotation else "excluded operator"))
    con.executemany(
        "INSERT OR REPLACE INTO work_results (worker_outcome, output, test_outcome, diff, job_id) "
        "VALUES ('SKIPPED', ?, NULL, NULL, ?)",
        [(why, job) for job, why in skipped],
    )
    con.commit()
    con.close()
    return len(skipped)


def tally(db: Path) -> tuple[int, int, int, list[tuple[str, str, int, str]]]:
    """(killed, survived, skipped, survivors as (job, operator, line, diff))."""
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT r.worker_outcome, r.test_outcome, r.diff, s.job_id, s.operator_name, s.start_pos_row "
        "FROM work_results r JOIN mutation_specs s ON r.job_id = s.job_id"
    ).fetchall()
    con.close()
    killed = survived = skipped = 0
    survivors = []
    for worker, test, diff, job, op, line in rows:
        if worker == "SKIPPED":
            skipped += 1
        elif worker == "NORMAL" and test == "SURVIVED":
            survived += 1
            survivors.append((job, op, line, diff or ""))
        else:  # killed, incompetent (the mutant does not even import) or abnormal (crash, timeout)
            killed += 1
    return killed, survived, skipped, sorted(survivors, key=lambda s: s[2])


def pending_count(db: Path) -> int:
    """Mutants not run yet (an interrupted session resumes with them; cosmic-ray runs them in random order)."""
    con = sqlite3.connect(db)
    (n,) = con.execute(
        "SELECT COUNT(*) FROM work_items WHERE job_id NOT IN (SELECT job_id FROM work_results)"
    ).fetchone()
    con.close()
    return n


def run_module(module: str, tests: list[str], cfg: dict, args, tree: Path, workdir: Path) -> tuple:
    slug = module.replace("/", "_").removesuffix(".py")
    db = workdir / f"{slug}.sqlite"
    # no plugin autoload: the mutants' tests need none of the installed pytest plugins, and loading them
    # (schemathesis, hypothesis, ...) took 40 % of each mutant's run on 2 cores
    command = " ".join(
        [
            "env",
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1",
            sys.executable,
            "-m",
            "pytest",
            *cfg["pytest-args"],
            *tests,
        ]
    )
    (workdir / f"{slug}.toml").write_text(
        "[cosmic-ray]\n"
        f'module-path = "{module}"\n'
        f"timeout = {float(cfg['timeout'])}\n"
        "excluded-modules = []\n"
        f'test-command = "{command}"\n'
        '[cosmic-ray.distributor]\nname = "local"\n'
    )
    cr = [str(Path(sys.executable).parent / "cosmic-ray"), "--verbosity", "ERROR"]
    if args.fresh or not db.exists():
        db.unlink(missing_ok=True)
        subprocess.run([*cr, "init", str(workdir / f"{slug}.toml"), str(db)], cwd=tree, check=True)
        skip(db, module, [] if args.all_operators else cfg.get("exclude-operators", []))
    elif args.recheck:  # the survivors run again, against the tests as they are now
        con = sqlite3.connect(db)
        con.execute("DELETE FROM work_results WHERE worker_outcome = 'NORMAL' AND test_outcome = 'SURVIVED'")
        con.commit()
        con.close()
    baseline = subprocess.run(command.split(), cwd=tree, capture_output=True, text=True)
    if baseline.returncode != 0:
        print(baseline.stdout[-3000:], baseline.stderr[-3000:])
        raise SystemExit(f"{module}: the unmutated tests fail ({' '.join(tests)}); fix them first.")
    subprocess.run([*cr, "exec", str(workdir / f"{slug}.toml"), str(db)], cwd=tree, check=True)
    killed, survived, skipped, survivors = tally(db)
    with open(workdir / f"survivors-{slug}.txt", "w") as f:
        for job, op, line, diff in survivors:
            f.write(f"## {module}:{line} {op} ({job})\n{diff}\n")
    return killed, survived, skipped, survivors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="modules to mutate (default: all of tools/mutate.toml)")
    parser.add_argument("--all-operators", action="store_true", help="do not exclude any operator")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".mutate")
    parser.add_argument("--fresh", action="store_true", help="start over instead of resuming a session")
    parser.add_argument(
        "--report", action="store_true", help="print the table of the sessions so far, run nothing"
    )
    parser.add_argument(
        "--recheck", action="store_true", help="run the survivors of a session again (after new tests)"
    )
    parser.add_argument("--config", type=Path, default=CONFIG, help="default: tools/mutate.toml")
    parser.add_argument("--fail-under", type=float, default=0.0, help="exit 1 below this score (%%)")
    args = parser.parse_args(argv)
    cfg = tomllib.loads(args.config.read_text())
    modules = args.modules or list(cfg["modules"])
    unknown = [m for m in modules if m not in cfg["modules"]]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; configured: {list(cfg['modules'])}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / ".gitignore").write_text("*\n")
    tree = args.workdir / "tree"
    if not args.report:
        copy_tree(tree)
    results = {}
    for module in modules:
        if args.report:
            db = args.workdir / f"{module.replace('/', '_').removesuffix('.py')}.sqlite"
            if db.exists():
                results[module] = tally(db)
            continue
        print(f"== mutating {module} against {' '.join(cfg['modules'][module])}", flush=True)
        results[module] = run_module(module, cfg["modules"][module], cfg, args, tree, args.workdir)
    print(f"\n{'module':<32} {'killed':>7} {'survived':>9} {'skipped':>8} {'pending':>8} {'score':>7}")
    failed = False
    for module, (killed, survived, skipped, _) in results.items():
        score = 100.0 * killed / max(1, killed + survived)
        failed |= score < args.fail_under
        db = args.workdir / f"{module.replace('/', '_').removesuffix('.py')}.sqlite"
        pending = pending_count(db)
        print(f"{module:<32} {killed:>7} {survived:>9} {skipped:>8} {pending:>8} {score:>6.1f}%")
    for module, (*_, survivors) in results.items():
        for _job, op, line, diff in survivors:
            change = [ln for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
            print(f"survivor {module}:{line} {op}: {change[0][1:].strip() if change else ''}")
    print(f"(survivors' diffs: {args.workdir}/survivors-*.txt)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
