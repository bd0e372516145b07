"""Which jobs a cloud tracks besides discovery (static `jobs`, the re-read `jobs_file`),
and which discovered jobs are worth tracking (the command filter)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence

from exporter.jobs import is_api_job, is_operator_job_id

log = logging.getLogger(__name__)


class JobIdSource:
    """Static IDs plus the IDs of a file, re-read only when the file changes."""

    def __init__(self, static: Iterable[str], path: str | None, *, cloud: str = "") -> None:
        self._static = frozenset(static)
        self._path = path
        self._cloud = cloud
        self._signature: tuple[int, int, int] | None = None
        self._from_file: frozenset[str] = frozenset()
        self._last_problem = ""

    def ids(self) -> frozenset[str]:
        if self._path is not None:
            self._refresh(self._path)
        return self._static | self._from_file

    def _refresh(self, path: str) -> None:
        try:
            st = os.stat(path)
            signature = (st.st_ino, st.st_size, st.st_mtime_ns)
            if signature == self._signature:
                return
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            # Keep the IDs read last time: a file being replaced must not drop every job.
            self._report(f"cannot read jobs_file: {exc.__class__.__name__}: {exc}")
            return
        ids, bad = parse_id_lines(text.splitlines())
        self._signature = signature
        self._from_file = frozenset(ids)
        self._last_problem = ""
        log.info(
            "jobs_file read",
            extra={"cloud": self._cloud, "path": path, "jobs": len(ids), "invalid_lines": bad},
        )

    def _report(self, problem: str) -> None:
        if problem != self._last_problem:  # one line per distinct failure, not per cycle
            log.warning(problem, extra={"cloud": self._cloud, "path": self._path})
            self._last_problem = problem


def parse_id_lines(lines: Iterable[str]) -> tuple[list[str], int]:
    """One ID a line; blank lines and `#` comments ignored. Returns (ids, invalid line count)."""
    ids: list[str] = []
    bad = 0
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if is_operator_job_id(line):
            ids.append(line)
        else:
            bad += 1
    return ids, bad


class CommandFilter:
    """Decides from a job's `cmd` class whether discovery tracks it.

    By default pseudo jobs (no cmd) and VM work jobs (com.cloud.vm.VmWork*) are skipped:
    they are the inner half of an API job and would count its duration twice.
    """

    def __init__(
        self,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        *,
        include_internal: bool = False,
    ) -> None:
        self._include = [re.compile(p) for p in include]
        self._exclude = [re.compile(p) for p in exclude]
        self._include_internal = include_internal
        self._cache: dict[str, str | None] = {}  # a cloud has a few hundred command classes at most

    def accepts(self, cmd_class: str) -> bool:
        return self.rejection(cmd_class) is None

    def rejection(self, cmd_class: str) -> str | None:
        """Why discovery leaves this job out ("pseudo", "internal", "filtered"), or None."""
        try:
            return self._cache[cmd_class]
        except KeyError:
            pass
        verdict = self._decide(cmd_class)
        if len(self._cache) < 10_000:
            self._cache[cmd_class] = verdict
        return verdict

    def _decide(self, cmd_class: str) -> str | None:
        if not self._include_internal:
            if not cmd_class:
                return "pseudo"
            if not is_api_job(cmd_class):
                return "internal"
        if self._include and not any(p.search(cmd_class) for p in self._include):
            return "filtered"
        if any(p.search(cmd_class) for p in self._exclude):
            return "filtered"
        return None
