"""Run a batch in a child process, the way a front end would: ``IN OUT WORKERS``.

Optional further arguments: ``PATTERN RECURSIVE OUTPUT_FORMAT`` (``RECURSIVE`` is 0 or 1).

Used by the kill/interrupt tests.  Injects :mod:`_faults` (by file name), logs
to stderr, and maps ``KeyboardInterrupt`` to exit status 130 like the CLI.  With
``NIMASK_TEST_START_METHOD`` set, calls :func:`multiprocessing.set_start_method`
with it first, as a caller's script may.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys

import _faults

import nimask.batch.case
import nimask.batch.run
from nimask import mask_dataset


def main() -> int:
    in_dir, out_dir, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if os.environ.get("NIMASK_TEST_START_METHOD"):
        multiprocessing.set_start_method(os.environ["NIMASK_TEST_START_METHOD"])
    extra = {}
    if len(sys.argv) > 4:
        extra = {"pattern": sys.argv[4], "recursive": sys.argv[5] == "1",
                 "output_format": sys.argv[6]}
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    nimask.batch.case.process_file = _faults.faulty_process_file
    try:
        results = mask_dataset(in_dir, out_dir, (20.0, 60.0), 1, workers=workers,
                               progress=False, **extra)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", file=sys.stderr)
        return 130
    print(sum(r.status == "written" for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
