"""The state file: what survives a restart, written atomically and read defensively.

Format (JSON): {"version": 1, "watermark": <Unix seconds>, "clouds": {name: tracker state}}.
A missing file means a first start; a file that cannot be used is renamed aside and the
exporter starts fresh, because losing history is better than not starting.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

VERSION = 1


class StateError(ValueError):
    """The state file exists but cannot be used."""


def build(clouds: Mapping[str, Mapping[str, Any]], watermark: float) -> dict[str, Any]:
    """The document to save: each cloud's tracker state and the global watermark."""
    return {"version": VERSION, "watermark": watermark, "clouds": dict(clouds)}


def save(path: str, data: Mapping[str, Any]) -> None:
    """Write `data` as JSON so that a crash at any moment leaves the old file or the new
    one, never a torn one: temp file in the same directory, fsync, rename, fsync the
    directory (so the rename itself is durable)."""
    if "version" not in data:
        data = {"version": VERSION, **data}
    directory, prefix = _temp_prefix(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, separators=(",", ":"), allow_nan=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _temp_prefix(path: str) -> tuple[str, str]:
    """(directory, name prefix) of the temp files of `path`: named after it, so that one
    state file's leftovers are never mistaken for another's."""
    absolute = os.path.abspath(path)
    return os.path.dirname(absolute), f".{os.path.basename(absolute)}."


def _remove_leftovers(path: str) -> None:
    """Delete temp files a killed writer left behind (they can be as large as the state)."""
    directory, prefix = _temp_prefix(path)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.startswith(prefix) and name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))


def _fsync_directory(directory: str) -> None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # some platforms cannot open directories; the rename is still atomic
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def load(path: str) -> dict[str, Any] | None:
    """The saved document, or None: when the file is missing, and when it is unusable
    (then it is renamed to `<path>.corrupt-<timestamp>` with a warning).

    Call it before the first save: it also removes what an interrupted save left behind."""
    _remove_leftovers(path)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        _set_aside(path, "not UTF-8 text")
        return None
    except OSError as exc:
        # Unreadable (permissions, a directory...): nothing to rename safely; start fresh.
        log.warning(
            "state file %s cannot be read (%s); starting without it", path, exc.strerror or exc
        )
        return None
    try:
        data = json.loads(text)
        validate(data)
    except (ValueError, RecursionError) as exc:
        _set_aside(path, str(exc)[:200])
        return None
    return data


def validate(data: Any) -> None:
    """Raise StateError unless `data` has the shape this version writes."""
    if not isinstance(data, dict):
        raise StateError("not a JSON object")
    version = data.get("version")
    if version != VERSION:
        raise StateError(f"unsupported version {version!r:.20} (expected {VERSION})")
    watermark = data.get("watermark")
    if watermark is not None and (
        not isinstance(watermark, int | float)
        or isinstance(watermark, bool)
        or not math.isfinite(watermark)
    ):
        raise StateError("watermark: expected Unix seconds")
    clouds = data.get("clouds")
    if not isinstance(clouds, dict) or not all(isinstance(v, dict) for v in clouds.values()):
        raise StateError("clouds: expected an object of objects")


def _set_aside(path: str, reason: str) -> None:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = f"{path}.corrupt-{stamp}"
    serial = 1
    while os.path.lexists(aside):  # never overwrite an earlier corrupt file
        serial += 1
        aside = f"{path}.corrupt-{stamp}-{serial}"
    try:
        os.replace(path, aside)
    except OSError as exc:
        log.warning(
            "state file %s is unusable (%s) and could not be renamed (%s); starting without it",
            path,
            reason,
            exc.strerror or exc,
        )
        return
    log.warning(
        "state file %s is unusable (%s); moved to %s, starting without it", path, reason, aside
    )
