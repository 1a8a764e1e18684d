"""Paths, whole-file reads, and the package's one atomic writer (model files, ONNX files,
weight archives)."""

from __future__ import annotations

import os
import secrets

__all__ = ["fspath", "read_bytes", "atomic_write"]


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


def atomic_write(path, chunks):
    """Writes the byte strings ``chunks`` to ``path`` through a temporary file in the same
    directory (fsync, then ``os.replace``), so ``path`` holds either its old content or all of
    the new one, never a part. The temporary file is removed if anything fails."""
    path = fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
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
