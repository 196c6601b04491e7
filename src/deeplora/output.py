"""Output files written all at once: checked before the work, renamed into place after it."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm


def existing_ancestor(path: Path) -> Path:
    """``path`` itself or its nearest ancestor that exists (``.`` for a relative path none of
    whose ancestors exists)."""
    return next((p for p in (path, *path.parents) if p.exists()), Path("."))


def check_writable(path: str | os.PathLike[str] | None) -> None:
    """Raise ``OSError`` now if ``path`` (a file to be created later) could not be written.

    ``None`` and ``"-"`` (stdout) always pass. Creates nothing.
    """
    if path is None or str(path) == "-":
        return
    target = Path(path)
    if target.is_dir():
        raise OSError(f"output path {str(target)!r} is a directory")
    existing = existing_ancestor(target.parent)
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise OSError(f"cannot write {str(target)!r}: {str(existing)!r} is not a writable folder")


def check_writable_dir(path: str | os.PathLike[str]) -> None:
    """Raise ``OSError`` now if ``path`` could not be created or written as a folder."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OSError(f"output folder {str(folder)!r} exists and is not a folder")
    existing = existing_ancestor(folder)
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise OSError(f"cannot write to {str(folder)!r}: {str(existing)!r} is not a writable "
                      "folder")


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    Missing folders of ``path`` are created; ``NotADirectoryError`` naming ``path`` if one of
    its ancestors is a file. Nothing is left at ``path`` (or beside it) if ``write`` raises.
    """
    target = Path(path)
    existing = existing_ancestor(target.parent)
    if not existing.is_dir():
        raise NotADirectoryError(f"cannot write {str(target)!r}: {str(existing)!r} is a file, "
                                 "not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix, dir=target.parent)
    os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; keep the user's umask
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def finite_json(obj: Any) -> Any:
    """``obj`` with non-finite floats replaced by ``None`` (JSON has no NaN/inf)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: finite_json(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(value) for value in obj]
    return obj


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically, or to stdout if ``path`` is ``"-"``."""
    text = json.dumps(finite_json(obj), indent=2, allow_nan=False) + "\n"
    if str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_atomic(path, lambda tmp: tmp.write_text(text))


def read_json_object(path: Path, required: Sequence[str]) -> dict[str, Any]:
    """The JSON object at ``path``, which has every key of ``required``; ``ValueError`` saying
    what is wrong if it is not valid JSON or not such an object (cut short, edited by hand)."""
    try:
        result = json.loads(path.read_text())
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(result, dict):
        raise ValueError(f"a JSON {type(result).__name__}, not an object")
    missing = [key for key in required if key not in result]
    if missing:
        raise ValueError(f"no key(s) {missing}")
    return result


def read_result(path: Path, required: Sequence[str],
                again: str = "the seed runs again") -> dict[str, Any] | None:
    """The result at ``path``: a JSON object with every key of ``required``; ``None`` if there
    is none, or if it is not valid JSON or not such an object (cut short, edited by hand): then
    it is renamed ``*.invalid``, with a message naming it and ending in ``again`` (what is
    redone), so that the run is redone."""
    try:
        return read_json_object(path, required)
    except FileNotFoundError:
        return None
    except ValueError as exc:
        aside = path.with_name(path.name + ".invalid")
        os.replace(path, aside)
        tqdm.write(f"deeplora: {path} is not a valid result ({exc}); moved to {aside.name}, "
                   f"{again}", file=sys.stderr)
        return None
