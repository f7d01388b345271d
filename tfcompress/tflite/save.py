"""`save_tflite`: write a flatbuffer atomically, never leaving a half-written file."""

from __future__ import annotations

import glob
import os
import re
import tempfile
from pathlib import Path

from tfcompress.tflite.flatbuffer import validate


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _remove_stale_temporaries(target: Path) -> None:
    """Delete the temporary files of earlier saves to `target` whose process has died.

    A save killed mid-write (SIGKILL, power loss) leaves its `.<name>.<pid>.<random>.tmp` file;
    the target itself is untouched. A live process's temporary (a concurrent save) is kept.
    """
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.[^.]+\.tmp")
    for leftover in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        match = pattern.fullmatch(leftover.name)
        if match is not None and not _process_alive(int(match.group(1))):
            leftover.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def save_tflite(flatbuffer: bytes, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a TFLite flatbuffer atomically (temporary file, then rename).

    Args:
        flatbuffer: bytes returned by `convert`.
        path: where to write; parent folders are created.
        overwrite: replace an existing file. Without it an existing file is an error.

    Returns:
        The path written.

    Example:
        >>> import tempfile, tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> out = tfc.save_tflite(tfc.convert(build_digits_cnn()), tempfile.mkdtemp() + "/m.tflite")
        >>> out.stat().st_size > 0
        True
    """
    if not isinstance(flatbuffer, bytes | bytearray):
        raise TypeError(
            f"save_tflite expects the bytes returned by convert(); got {type(flatbuffer).__name__}."
        )
    validate(bytes(flatbuffer), origin="the bytes given to save_tflite")
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(
            f"'{target}' is a directory: give a file path such as '{target}/model.tflite'."
        )
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"'{target}' already exists; pass overwrite=True (CLI: --overwrite) to replace it."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent
    )
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(flatbuffer)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, _default_file_mode())  # mkstemp makes 0600; give what open() would
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
