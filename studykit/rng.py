"""Random streams: stable seeds derived from a run's seed, and generators on the device.

A run has one seed integer. Every consumer of randomness (weight initialization, the method's
augmentations and attack starts, the global RNG that dropout-like layers use) gets its own
stream, derived from that integer and a name, so that no two streams repeat each other (seeding
the weights and the augmentations with the same integer makes the first augmentation draws a
copy of the first initialization draws).

Methods keep a CPU ``torch.Generator``: its state is small, saved in checkpoints, and the same
on every machine. Large draws for data on a GPU (a PGD random start is as large as the batch)
would then be made on the host and copied every call; :func:`device_generator` instead seeds a
generator on the data's device from one small draw of the CPU generator, so the stream stays
reproducible and resumable (it is a function of the CPU generator's state) without the copy.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["derive_seed", "device_generator", "seeded_generator"]


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from printable parts (unlike ``hash``, the same in every process).

    Example:
        >>> derive_seed(0, "method") != derive_seed(0, "init")
        True
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seeded_generator(*parts: object, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded with ``derive_seed(*parts)``."""
    return torch.Generator(device=device).manual_seed(derive_seed(*parts))


def device_generator(
    generator: torch.Generator | None, device: torch.device | str
) -> torch.Generator | None:
    """A generator to draw on ``device``.

    ``generator`` itself when it already lives there (or is None: the global RNG); otherwise a
    new generator on ``device`` seeded from one 63-bit draw of ``generator``, so that the draws
    made with it are reproducible from ``generator``'s state and advance it by one draw.
    """
    device = torch.device(device)
    if generator is None or generator.device.type == device.type:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return torch.Generator(device=device).manual_seed(seed)
