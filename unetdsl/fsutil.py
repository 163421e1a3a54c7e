"""Atomic file writes: a temporary file in the target folder, fsync, then rename into place,
so a crash or an exception mid-write leaves the previous file intact.

`check_output` is asked *before* any work: a target that is an input of the same command, a
directory, a device, a read-only file or in a folder we cannot write is refused up front, so a
long build never ends in a failed write and no file of the user's is replaced by surprise.
Temporaries carry the writer's PID, so a run only removes temporaries of runs that are dead."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from .errors import UnetdslError

TMP_PREFIX = ".unetdsl-tmp-"


class OutputError(UnetdslError):
    """An output path unetdsl will not write (it would destroy an input, or cannot be written)."""


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(target: str | os.PathLike[str], *, inputs: Mapping[str, str | os.PathLike[str] | None] | None = None) -> Path:
    """Refuse, before any work, an output path that cannot or must not be written. `inputs` names
    the files the same command reads (role -> path): an output onto one of them would replace it."""
    t = Path(target)
    for role, path in (inputs or {}).items():
        if path is not None and (_same_file(t, Path(path)) or t.resolve() == Path(path).resolve()):
            raise OutputError(f"{t}: is also the {role} this command reads; writing it would destroy it: "
                              "choose another output path")
    if t.is_symlink() or t.exists():
        if t.is_dir():
            raise OutputError(f"{t}: is a directory; give a file name inside it (e.g. {t / ('model' + (t.suffix or '.pt'))})")
        if not t.is_file():
            raise OutputError(f"{t}: exists and is not a regular file (a device, a pipe, a socket?); "
                              "unetdsl replaces only regular files")
        if not t.stat().st_mode & 0o222:
            raise OutputError(f"{t}: is read-only; unetdsl does not replace a file you protected "
                              "(make it writable or remove it first)")
    folder = t.parent if str(t.parent) else Path(".")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{t}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{t}: cannot write into {existing} (permission denied)")
    return t


def _temporary_prefix(target: Path) -> str:
    return f"{TMP_PREFIX}{target.name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success it replaces `target`, else vanishes."""
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    # keep the suffix: some writers/readers (torch.export) check it
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(target), suffix=target.suffix, dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result should look like any written file
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # again after the writer: some (safetensors) replace the file they are given with one of
        # mode 0600, and a saved file should have the permissions any file the user writes has
        os.chmod(tmp_path, 0o666 & ~umask)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
        with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def write_text_atomic(target: str | os.PathLike[str], text: str) -> None:
    write_atomic(target, lambda p: p.write_text(text, encoding="utf-8"))


def write_atomic(target: str | os.PathLike[str], writer: Callable[[Path], object]) -> None:
    with atomic_path(target) as tmp:
        writer(tmp)


def remove_stale_temporaries(target: str | os.PathLike[str]) -> list[Path]:
    """Delete temporaries a killed earlier write of `target` left behind: only this target's, and
    only those whose writer (the PID in the name) is dead — a concurrent live run keeps its own."""
    target = Path(target)
    folder = target.parent if str(target.parent) else Path(".")
    removed = []
    prefix = TMP_PREFIX + target.name + "."
    for stale in folder.glob(glob.escape(prefix) + "*"):
        pid_text = stale.name[len(prefix):].split(".", 1)[0]
        if pid_text.isdigit() and _pid_alive(int(pid_text)):
            continue  # a live writer's (or, for a name without a PID, an older unetdsl's: removed)
        with contextlib.suppress(OSError):
            stale.unlink()
            removed.append(stale)
    return removed
