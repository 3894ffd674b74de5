"""The error types vpsearch shows as one line: the user's input, files or machine are at fault.

Every layer may import this module (it imports nothing of vpsearch). The CLI prints a
VpsearchError as ``vpsearch: error: <first line>`` and exits with status 2; any other
exception is a bug and keeps its traceback (``VPSEARCH_DEBUG=1`` shows one for these too).
ConfigError lives here (config and the schedules below it raise it); the other layers
subclass UserError for their own kind (DataError, CheckpointError, StudyError, ReportError,
TrackingUnavailable).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


class VpsearchError(Exception):
    """Base of every error the CLI shows as one line without a traceback."""


class UserError(VpsearchError, ValueError):
    """Bad input (an argument, a file, a folder); the message names it and says what was expected.

    A ValueError too, so code that caught ValueError before keeps working."""


class ConfigError(UserError):
    """A config file or override is malformed; the message names the file and field."""


def os_error(e: OSError, path: str | Path, doing: str, fix: str = "",
             error: type[UserError] = UserError) -> UserError:
    """One line for a failed file operation: what, where, why, and how to fix it.

    e.g. os_error(e, out, "writing checkpoint best.pt", "pass another --out")
      -> "no space left on device /mnt/x (/mnt/x/run/checkpoints) while writing checkpoint best.pt"
    """
    path = Path(path)
    code = e.errno
    if code == errno.ENOSPC:
        why = f"no space left on {_device(path)}"
    elif code == errno.EDQUOT:
        why = f"disk quota exceeded on {_device(path)}"
    elif code == errno.EROFS:
        why = f"{path} is not writable (read-only file system)"
    elif code in (errno.EACCES, errno.EPERM):
        why = f"{path} is not writable (permission denied)"
    elif code == errno.ENOTDIR:
        why = f"{_file_on_the_way(path)} is a file, not a folder"
    elif code == errno.EEXIST:
        why = f"{path} already exists and is not a folder"
    else:
        why = f"{path}: {e.strerror or type(e).__name__}"
    return error(f"{why} while {doing}" + (f"; {fix}" if fix else ""))


def _device(path: Path) -> str:
    """'device MOUNTPOINT (PATH)': the file system a full disk is."""
    p = path.resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    mount = p
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    return f"device {mount}" + (f" ({path})" if Path(path).resolve() != mount else "")


def _file_on_the_way(path: Path) -> Path:
    """The first component of path that exists and is not a folder."""
    p = Path(path).absolute()
    for parent in [*reversed(p.parents), p]:
        if parent.exists() and not parent.is_dir():
            return parent
    return p
