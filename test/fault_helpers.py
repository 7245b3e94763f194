"""Faults a test can inject into a child process for real: permissions that hold even for root,
a file-size limit standing in for a full disk.

Tests run as root on the CI machines, and root reads mode-000 files and writes into mode-555
directories (CAP_DAC_OVERRIDE). ``without_root_file_override`` drops that capability from the
child's bounding set before exec, so the child meets permissions as any user would; for a
non-root user it changes nothing. ``file_size_limit`` makes every write beyond ``limit`` bytes fail
with EFBIG (Python ignores SIGXFSZ), the same error path as a full disk (ENOSPC).
"""

from __future__ import annotations

import ctypes
import os
import resource

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def without_root_file_override() -> None:
    """preexec_fn: the child cannot bypass file permissions (root loses CAP_DAC_OVERRIDE/READ_SEARCH)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def file_size_limit(limit: int):
    """preexec_fn factory: writes past ``limit`` bytes per file fail (EFBIG), like a full disk."""
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return apply


def both(*fns):
    def apply() -> None:
        for fn in fns:
            fn()
    return apply
