"""Gives the BLAS that torch calls the thread count of the script's --threads argument.

Import it before torch. Debian's torch calls the system OpenBLAS (BLAS_INFO=generic), whose
thread count torch.set_num_threads does not change, and OpenBLAS reads OPENBLAS_NUM_THREADS
once, when it is loaded: with --threads 1 a dense layer still ran on two threads (d = 1024,
2048 rows, forward: 30 ms against 46 ms on one).
"""

import os
import sys


def threads_argument(argv, default):
    """The value of --threads N or --threads=N in argv (the last one wins), else default."""
    value = str(default)
    for index, arg in enumerate(argv):
        if arg == "--threads" and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith("--threads="):
            value = arg.split("=", 1)[1]
    return value


def limit_to_threads_argument(default=2):
    threads = threads_argument(sys.argv, default)
    os.environ["OPENBLAS_NUM_THREADS"] = threads
    os.environ["OMP_NUM_THREADS"] = threads
