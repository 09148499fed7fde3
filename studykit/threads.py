"""Thread counts: torch's intra-op threads for small work, and the cores a process may use.

Small ops (a few hundred elementwise ops on a chunk of images, or one 32x32 image through a
small CNN) lose more to synchronisation between intra-op threads than they gain; on 2 busy
cores the loss is 10-200x (one image through the quick small CNN: 0.35 ms on one thread, 73 ms
on two while another process keeps a core busy).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_intra_op_thread() -> Iterator[int]:
    """Run torch ops on one intra-op thread; yields the caller's thread count, then restores it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
