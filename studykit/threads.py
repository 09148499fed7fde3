"""Torch's intra-op thread count for small work.

Small ops (a few hundred elementwise ops on a chunk of images, or one 32x32 image through a
small CNN) lose more to synchronisation between intra-op threads than they gain; on 2 busy
cores the loss is 10-200x (one image through the quick small CNN: 0.35 ms on one thread, 73 ms
on two while another process keeps a core busy).
"""

from __future__ import annotations

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
