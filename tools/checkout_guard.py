"""Records every reach into the checkout from a Python process of the installed-wheel check.

``tools/wheel_check.sh`` copies this file into the fresh virtual environment's site-packages (with a ``.pth``
line that imports it), so every Python process started from that environment, and every subprocess it
starts, carries it. With ``TEXTENV_GUARD_ROOT`` set (the checkout) it appends one line to
``TEXTENV_GUARD_LOG`` for each:

* ``sys.path`` entry, ``sys.prefix`` or ``sys.executable`` under the checkout (at start-up);
* file opened, folder listed or globbed, working folder changed to, subprocess started in, or file
  copied, moved or removed under the checkout (through ``sys.addaudithook``: the ``open`` event covers
  every import's source and bytecode reads too);
* module whose ``__file__`` is under the checkout (at exit).

Paths are compared after ``os.path.realpath``, so a symbolic link into the checkout counts too. The hook
only records: it never raises into the program, so a caught exception cannot hide a reach; the check
fails when the log is not empty. Without ``TEXTENV_GUARD_ROOT`` it does nothing.
"""

from __future__ import annotations

import atexit
import os
import sys

_ROOT = os.environ.get("TEXTENV_GUARD_ROOT")
_LOG = os.environ.get("TEXTENV_GUARD_LOG")
# event -> the positions of its path arguments (https://docs.python.org/3/library/audit_events.html)
_PATH_ARGS = {
    "open": (0,),
    "os.listdir": (0,),
    "os.scandir": (0,),
    "os.chdir": (0,),
    "os.mkdir": (0,),
    "os.remove": (0,),
    "os.rename": (0, 1),
    "os.rmdir": (0,),
    "os.symlink": (0, 1),
    "os.truncate": (0,),
    "os.utime": (0,),
    "os.chmod": (0,),
    "glob.glob": (0,),
    "glob.glob/2": (0, 1),
    "pathlib.Path.glob": (0,),
    "pathlib.Path.rglob": (0,),
    "shutil.copyfile": (0, 1),
    "shutil.copytree": (0, 1),
    "shutil.move": (0, 1),
    "shutil.rmtree": (0,),
    "subprocess.Popen": (0, 2),  # executable, cwd
    "os.exec": (0,),
    "os.posix_spawn": (0,),
}
_busy = False


def _under_root(path: object) -> str | None:
    """``path`` resolved, when it lies under the checkout; else None (file descriptors and odd types too)."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str) or not path:
        return None
    real = os.path.realpath(path)
    return real if real == _ROOT or real.startswith(_ROOT + os.sep) else None


def _record(what: str, path: str) -> None:
    global _busy
    _busy = True  # writing the log opens a file: that open must not be checked again
    try:
        line = f"pid {os.getpid()} {what}: {path} (argv {sys.argv!r})\n"
        with open(_LOG, "a", encoding="utf-8") as fh:
            fh.write(line)
        sys.stderr.write("checkout_guard: " + line)
    finally:
        _busy = False


def _hook(event: str, args: tuple) -> None:
    if _busy:
        return
    positions = _PATH_ARGS.get(event)
    if positions is None:
        return
    for i in positions:
        if i < len(args):
            hit = _under_root(args[i])
            if hit:
                _record(event, hit)


def _check_modules() -> None:
    for name, module in list(sys.modules.items()):
        hit = _under_root(getattr(module, "__file__", None))
        if hit:
            _record(f"module {name} loaded from", hit)


def install() -> None:
    for entry in sys.path:
        hit = _under_root(entry or os.getcwd())
        if hit:
            _record("sys.path entry", hit)
    for what, value in (("sys.prefix", sys.prefix), ("sys.executable", sys.executable)):
        hit = _under_root(value)
        if hit:
            _record(what, hit)
    sys.addaudithook(_hook)
    atexit.register(_check_modules)


if _ROOT and _LOG:
    _ROOT = os.path.realpath(_ROOT)
    install()
