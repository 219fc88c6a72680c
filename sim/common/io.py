"""Atomic output: write to a temporary file or directory beside the target, then rename.

An interrupted run (Ctrl-C, crash) never leaves a half-written result file, and a
result directory is never a mix of two runs: :func:`atomic_dir` builds it in a hidden
sibling and renames it into place whole.  :func:`check_output_file` and
:func:`check_output_dir` vet an output path before any work is done (the CLI calls
them before simulating); :func:`check_not_input` refuses an output that is one of the
command's inputs.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _make_parents(path: Path) -> list[Path]:
    """Create the missing folders above ``path``; returns them, innermost first."""
    made: list[Path] = []
    d = path.parent
    while not d.exists() and d != d.parent:
        made.append(d)
        d = d.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    return made


def _remove_made(made: list[Path]) -> None:
    """Undo :func:`_make_parents` after a failure (folders still empty only)."""
    for d in made:
        try:
            d.rmdir()
        except OSError:
            break


def atomic_write(path: str | Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``.

    The temporary file is a hidden sibling (``.NAME.XXXX.tmp``); it is removed when
    ``write`` raises (KeyboardInterrupt included), so a failure leaves ``path`` as it
    was (absent, or the previous complete file), and the folders created for it are
    removed again.
    """
    target = Path(path)
    made = _make_parents(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except BaseException:
        _remove_made(made)
        raise
    os.close(fd)
    try:
        # mkstemp creates the file private (0600); results get the usual permissions
        os.chmod(tmp, 0o666 & ~_umask())
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        _remove_made(made)
        raise


def atomic_write_stream(path: str | Path, write: Callable[[IO[str]], T]) -> T:
    """Call ``write(fh)`` on a text stream whose content lands at ``path`` only when
    ``write`` returns; returns what ``write`` returned.

    A ``path`` ending in ``.gz`` is gzip-compressed with mtime 0 and the target's own
    name in the gzip header, so the bytes are those of a direct write with
    :func:`sim.workload.traces.io.open_write` (the temporary name never shows).
    """
    target = Path(path)
    out: list[T] = []

    def w(tmp: str) -> None:
        with open(tmp, "wb") as raw:
            binary: IO[bytes] = raw
            gz = None
            if target.name.endswith(".gz"):
                gz = gzip.GzipFile(filename=target.name, mode="wb", fileobj=raw, mtime=0)
                binary = gz  # type: ignore[assignment]
            fh = io.TextIOWrapper(binary, encoding="utf-8")
            try:
                out.append(write(fh))
            finally:
                fh.close()  # closes gz (which leaves raw open); raw closes on exit

    atomic_write(target, w)
    return out[0]


def atomic_write_text(path: str | Path, text: str) -> None:
    def w(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")

    atomic_write(path, w)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


# ---- output directories -------------------------------------------------------------

#: Files and folders whose presence marks a directory as written by agentsim (a run,
#: a comparison, a sweep or a regression check): only such a directory is replaced.
OUTPUT_MARKERS = (
    "summary.json",
    "config.json",
    "calls.parquet",
    "report.md",
    "comparison.csv",
    "comparison.md",
    "sweep.parquet",
    "failures.json",
    "regress.md",
    "keynote.md",
)


def _output_error(path: Path | str, flag: str, problem: str) -> Exception:
    from sim.common.errors import InputError

    return InputError(str(path), None, flag, problem)


def is_output_dir(path: str | Path) -> bool:
    """Whether ``path`` is a directory agentsim wrote (it holds one of
    :data:`OUTPUT_MARKERS`, or only a ``runs/`` folder of run directories)."""
    p = Path(path)
    if not p.is_dir():
        return False
    if any((p / m).exists() for m in OUTPUT_MARKERS):
        return True
    runs = p / "runs"
    return runs.is_dir() and all(e.is_dir() for e in runs.iterdir())


def _is_empty_dir(p: Path) -> bool:
    return p.is_dir() and next(p.iterdir(), None) is None


def _check_parent(p: Path, flag: str) -> None:
    """The nearest existing ancestor of ``p`` must be a writable directory."""
    a = p.absolute().parent
    while not a.exists() and a != a.parent:
        a = a.parent
    if not a.is_dir():
        raise _output_error(p, flag, f"cannot create it: {a} is not a directory")
    if not os.access(a, os.W_OK | os.X_OK):
        raise _output_error(p, flag, f"cannot create it: {a} is not writable")


def check_output_file(path: str | Path, flag: str = "--out") -> Path:
    """Vet an output file before any work: not a directory, and its folder can be
    created and written.  Raises :class:`~sim.common.errors.InputError` (one line)."""
    p = Path(path)
    if p.is_dir():
        raise _output_error(p, flag, "is a directory; name an output file")
    if p.exists() and not os.access(p, os.W_OK):
        raise _output_error(p, flag, "exists and is not writable")
    _check_parent(p, flag)
    return p


def check_output_dir(path: str | Path, force: bool = False, flag: str = "--out") -> Path:
    """Vet an output directory before any work.

    Absent or empty: fine.  An existing file, or a non-empty directory agentsim did not
    write, is refused (even with ``force``: it is never deleted).  A directory of
    earlier results needs ``force`` (it is then replaced whole by :func:`atomic_dir`).
    Raises :class:`~sim.common.errors.InputError` (one line).
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise _output_error(p, flag, "exists and is not a directory")
    if p.is_dir() and not _is_empty_dir(p):
        if not is_output_dir(p):
            raise _output_error(
                p,
                flag,
                "is a non-empty directory that agentsim did not write; "
                "refusing to replace it (name a new or empty directory)",
            )
        if not force:
            raise _output_error(
                p,
                flag,
                "already holds results; pass --force to replace them, or choose another --out",
            )
    if p.is_dir() and not os.access(p.absolute().parent, os.W_OK | os.X_OK):
        raise _output_error(p, flag, f"cannot replace it: {p.absolute().parent} is not writable")
    _check_parent(p, flag)
    return p


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.absolute().resolve() == b.absolute().resolve()


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.absolute().resolve().relative_to(parent.absolute().resolve())
    except ValueError:
        return False
    return True


def check_not_input(
    out: str | Path, inputs: Iterable[str | Path], flag: str = "--out", directory: bool = False
) -> None:
    """Refuse an output that would overwrite an input: the same file (also through a
    symlink or a hard link), a file inside an input directory, or (``directory``: the
    output is a directory that replaces what is there) an input inside the output."""
    o = Path(out)
    for raw in inputs:
        i = Path(raw)
        if not i.exists():
            continue
        if o.exists() and _same_file(o, i):
            raise _output_error(o, flag, f"is the input {raw}; write the output elsewhere")
        if i.is_dir() and _inside(o, i):
            raise _output_error(o, flag, f"is inside the input directory {raw}")
        if directory and _inside(i, o):
            raise _output_error(o, flag, f"holds the input {raw}, which replacing it would delete")


def _fresh_sibling(target: Path, suffix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent))


def install_dir(tmp: str | Path, path: str | Path, replace: bool = True) -> Path:
    """Rename the complete directory ``tmp`` onto ``path``.

    An absent or empty ``path`` is replaced by one rename.  A non-empty one is, with
    ``replace``, renamed aside, ``tmp`` renamed in, and the old one deleted (a reader
    sees the old directory or the new one, never a mix); without ``replace`` it raises
    :class:`~sim.common.errors.InputError` (another run wrote there meanwhile) and leaves both.
    Only a directory agentsim wrote (:func:`is_output_dir`) is ever replaced.
    """
    src, target = Path(tmp), Path(path)
    try:
        os.rename(src, target)
        return target
    except OSError as e:
        if target.exists() and not target.is_dir():
            raise _output_error(target, "--out", "exists and is not a directory") from None
        if not target.is_dir() or _is_empty_dir(target):
            raise _output_error(target, "--out", f"cannot write it: {e.strerror or e}") from None
    if not replace:
        raise _output_error(
            target, "--out", "was written by another run meanwhile; pass --force to replace it"
        )
    if not is_output_dir(target):
        raise _output_error(target, "--out", "is a non-empty directory that agentsim did not write")
    old = _fresh_sibling(target, ".old")
    os.rename(target, old / "d")
    try:
        os.rename(src, target)
    except BaseException:
        os.rename(old / "d", target)
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return target


@contextlib.contextmanager
def atomic_dir(path: str | Path, replace: bool = True) -> Iterator[Path]:
    """Build a directory in a hidden temporary sibling (``.NAME.XXXX.partial``) and,
    when the block ends without an exception, :func:`install_dir` it onto ``path``
    (``replace``: see there).  On any exception (KeyboardInterrupt included) the
    temporary directory and the folders created above it are deleted, and ``path`` is
    left as it was.

    >>> with atomic_dir("results/run") as d:   # doctest: +SKIP
    ...     (d / "summary.json").write_text("{}")
    """
    target = Path(path)
    if target.is_symlink():
        target = target.resolve()
    made = _make_parents(target)
    try:
        tmp = _fresh_sibling(target, ".partial")
    except BaseException:
        _remove_made(made)
        raise
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private (0700)
        yield tmp
        install_dir(tmp, target, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_made(made)
        raise


def link_or_copy_tree(src: str | Path, dst: str | Path) -> None:
    """Copy the files of directory ``src`` into ``dst`` (created), as hard links where
    the file system allows (no data is copied) and as copies elsewhere.  A file later
    replaced in ``dst`` by an atomic write (a rename) leaves ``src`` untouched."""

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link, dirs_exist_ok=True)


# ---- content digests ----------------------------------------------------------------


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes; of a directory, of its files' names and
    digests in name order (so the same content gives the same digest anywhere)."""
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(f.relative_to(p).as_posix().encode() + b"\0" + file_sha256(f).encode())
        return h.hexdigest()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def config_digest(obj: Any, n: int = 8) -> str:
    """The first ``n`` hex digits of the SHA-256 of ``obj`` as canonical JSON (sorted
    keys, no spaces): the same config gives the same digest on every machine."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:n]


def read_toml(path: str | Path) -> tuple[dict[str, Any], str]:
    """Read a UTF-8 TOML file; returns the document and its text.

    Every failure (missing file, unreadable, not UTF-8, invalid TOML) raises
    :class:`~sim.common.errors.InputError` naming the file and, where known, the line.
    """
    import re
    import tomllib

    from sim.common.errors import InputError

    p = str(path)
    try:
        data = Path(p).read_bytes()
    except FileNotFoundError:
        raise InputError(p, None, None, "file not found") from None
    except OSError as e:
        raise InputError(p, None, None, f"cannot read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(p, line, None, f"not UTF-8 text (byte {e.start}: {e.reason})") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"at line (\d+)", str(e))
        at: int | None = int(m.group(1)) if m else None
        if at is None and "end of document" in str(e):  # a truncated file: its last line
            at = text.count("\n") + (0 if text.endswith("\n") else 1)
        raise InputError(p, at, None, f"invalid TOML: {e}") from None
