"""CPU thread count for PyTorch that suits how busy the machine is.

PyTorch's CPU kernels split work across every core and wait for the slowest thread. On a
machine whose cores are partly taken by other processes, that wait dominates: on a
2-core machine with one core busy, the full demo took 112 s with 2 threads and 19 s with 1
(11.8 s with 2 threads when idle). The command line and the test suite therefore use only
the cores that are free.
"""

from __future__ import annotations

import os


def free_cores() -> int:
    """Cores not taken by other work, from the 1-minute load average (at least 1)."""
    n = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on every platform
        return n
    return max(1, min(n, int(n - busy + 0.5)))


def use_free_cores() -> int:
    """Set PyTorch's intra-op threads to :func:`free_cores` unless ``OMP_NUM_THREADS`` says otherwise.

    Returns the number of threads in use.

    Example:
        >>> from interpretlm.runtime import use_free_cores
        >>> use_free_cores() >= 1
        True
    """
    import torch

    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(free_cores())
    return torch.get_num_threads()
