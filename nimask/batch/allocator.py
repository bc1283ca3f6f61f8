"""The C heap of the processes nimask owns: freed volume buffers kept for the next volume.

glibc gives large freed blocks back to the kernel: a block above its mmap
threshold is unmapped when freed, and the top of the heap is trimmed once more
than twice that threshold is free there.  A batch allocates the same few large
buffers for every volume (the input image, the mask, their temporaries), so
every volume paid for fresh zeroed pages again: on the real head CT
(256x256x108 int16), about 9,000 page faults and 20 ms of a 95 ms volume; on a
256^3 float32 head, 25,000 faults and 60 ms of 360 ms.

:func:`keep_freed_memory` raises both thresholds (256 MiB and 512 MiB), so
those buffers are reused from one volume to the next.  The peak memory of a
process does not change (it holds the same buffers at its busiest moment); its
memory between two volumes stays at that peak instead of dropping.

It is called only in processes nimask owns: its pool's worker processes and the
``nimask`` command.  A program that calls nimask itself (a script or notebook
running ``mask_dataset(..., workers=1)`` or the documented function) keeps its
allocator as it is: the setting lasts for the life of the process and turns
off glibc's own adjustment of the thresholds, which is the program's choice,
not a library's.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"]

logger = logging.getLogger(__name__)

#: Blocks up to this size come from the heap (glibc's default is 128 KiB, raised
#: on its own up to 32 MiB).
MMAP_THRESHOLD = 256 << 20
#: Free memory at the top of the heap kept for the next volume.
TRIM_THRESHOLD = 512 << 20
# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Keep freed volume buffers in this process for reuse (glibc only; see module doc).

    Returns
    -------
    bool
        True when glibc accepted both settings; False on other systems and C
        libraries, which are left as they are.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  # glibc only (musl's mallopt does nothing)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    if done:
        logger.debug("process %d keeps freed volume buffers for the next volume (glibc "
                     "mmap threshold %d MiB, trim threshold %d MiB)", os.getpid(),
                     MMAP_THRESHOLD >> 20, TRIM_THRESHOLD >> 20)
    else:
        logger.debug("glibc refused the heap thresholds; freed memory is returned as usual")
    return done
