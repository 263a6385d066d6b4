"""Seeds derived from a run's seed, one per use, independent of each other.

Arithmetic on the seed (seed + i for layer i, seed + 1000 for the critic) makes neighbouring seeds share
draws: seed s's layer i + 1 would start as seed s + 1's layer i. Numpy's SeedSequence mixes the seed with
the path of its use (a network's name, a layer's index) through a hash, so no two uses of any two seeds share
a stream.
"""

import zlib
from typing import Union

import numpy as np


def derived_seed(seed: int, *path: Union[str, int], bits: int = 32) -> int:
    """A `bits`-bit seed (32 or 64) for the use named by `path` (strings and non-negative ints) of `seed`."""
    spawn_key = tuple(zlib.crc32(part.encode()) if isinstance(part, str) else int(part) for part in path)
    dtype = {32: np.uint32, 64: np.uint64}[bits]
    return int(np.random.SeedSequence(int(seed), spawn_key=spawn_key).generate_state(1, dtype)[0])
