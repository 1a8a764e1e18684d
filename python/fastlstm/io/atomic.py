"""Paths, whole-file reads, and the package's one atomic writer (model files, ONNX files,
weight archives)."""

from __future__ import annotations

import os
import re
import secrets
import time

__all__ = ["fspath", "read_bytes", "atomic_write"]

# when this process loaded the writer: temporaries older than this cannot be a save of ours
_STARTED = time.time()


def fspath(path, name="path"):
    try:
        return os.fspath(path)
    except TypeError:
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}") from None


def read_bytes(path, kind):
    """The content of ``path``; FileNotFoundError or ValueError naming the path and ``kind``
    (what the file should be: "model file", "ONNX file")."""
    path = fspath(path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such {kind}: {path!r}") from None
    except IsADirectoryError:
        raise ValueError(f"{path!r} is a directory, not a {kind}") from None


def _remove_stale_temporaries(directory, base):
    """Removes ``.{base}.<12 hex>.tmp`` files (this writer's temporaries for the same target)
    last modified before this process loaded the writer: left behind by a save that was killed
    (a live save's temporary is being written, so it is newer). Best effort: errors are
    ignored."""
    pattern = re.compile(r"\." + re.escape(base) + r"\.[0-9a-f]{12}\.tmp")
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not pattern.fullmatch(name):
            continue
        full = os.path.join(directory, name)
        try:
            if os.stat(full).st_mtime < _STARTED:
                os.unlink(full)
        except OSError:
            pass


def atomic_write(path, chunks):
    """Writes the byte strings ``chunks`` to ``path`` through a temporary file in the same
    directory (fsync, then ``os.replace``), so ``path`` holds either its old content or all of
    the new one, never a part. The temporary file is removed if anything fails; temporaries of
    the same target that a killed save left behind (older than this process's writer) are
    removed first."""
    path = fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    _remove_stale_temporaries(directory, os.path.basename(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    # 0o666 filtered by the umask, like a plain open(path, "wb")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    # make the rename itself durable (POSIX; best effort elsewhere)
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
