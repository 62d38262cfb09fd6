"""One CPU thread budget per process. CPU workers that share a machine's cores each get N threads, and every
numeric library must honour that, not only torch: OpenMP (torch, and numba, which rembg's pymatting loads and
which otherwise resets OpenMP's thread count to every core), MKL and OpenBLAS (numpy), rayon (the tokenizers),
OpenCV, onnxruntime and our own thread pools. Idle OpenMP and OpenCV threads spin for a while after each parallel
region, so a pool larger than the budget burns another worker's core even when it does little work."""

from __future__ import annotations

import os

BUDGET_VARIABLE = "OMP_NUM_THREADS"  # the budget's record, read by this module and by OpenMP itself
LIBRARY_VARIABLES = (BUDGET_VARIABLE, "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
                     "RAYON_NUM_THREADS")


def limit_cpu_threads(threads: int) -> None:
    """Give this process ``threads`` CPU threads in every library. Call it first thing: most libraries read their
    variable once, when they load; torch and OpenCV, already loaded or not, are set directly."""
    for variable in LIBRARY_VARIABLES:
        os.environ[variable] = str(threads)
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def cpu_threads() -> int:
    """The threads this process may use for its own pools: its budget, or every core when it has none."""
    value = os.environ.get(BUDGET_VARIABLE, "")
    return int(value) if value.isdigit() and int(value) > 0 else (os.cpu_count() or 1)
