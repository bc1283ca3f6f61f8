"""Run a batch in a child process, the way a front end would: ``IN OUT WORKERS``.

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
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    nimask.batch.case.process_file = _faults.faulty_process_file
    try:
        results = mask_dataset(in_dir, out_dir, (20.0, 60.0), 1, workers=workers,
                               progress=False)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", file=sys.stderr)
        return 130
    print(sum(r.status == "written" for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
