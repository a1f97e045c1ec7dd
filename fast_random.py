"""`random.Random` with faster `shuffle` and `randint` that draw exactly the same numbers.

CPython 3.11's `shuffle` and `randint` are Python code that calls `_randbelow(n)` per draw, which
calls `getrandbits(n.bit_length())` until the result is below n. `FastRandom` makes the same
`getrandbits` calls in the same order from tight loops, without the per-draw Python function
calls, so an algorithm that calls these methods in the reference's order produces the
reference's results. `random()` and `getrandbits()` are `random.Random`'s own (C) methods.
"""

import itertools
import random

# (index, bits) of a shuffle's draws for indices 4095 down to 1: the draw at index i is
# getrandbits(bit_length(i + 1)) until it is <= i. Shuffles up to 4096 items take a slice.
_TABLE_SIZE = 1 << 12
_DESCENDING_DRAWS = [(i, (i + 1).bit_length()) for i in range(_TABLE_SIZE - 1, 0, -1)]


def _descending_draws(size):
    """(index, bits) for the draws of a shuffle of `size` items, indices size - 1 down to 1."""
    if size <= 1:
        return []
    if size <= _TABLE_SIZE:
        return _DESCENDING_DRAWS[len(_DESCENDING_DRAWS) - (size - 1):]
    top_bits = size.bit_length()
    # Indices i with bit_length(i + 1) == bits: 2**(bits - 1) - 1 <= i <= 2**bits - 2.
    bits_runs = [itertools.repeat(top_bits, size - (1 << (top_bits - 1)) + 1)]
    bits_runs.extend(itertools.repeat(bits, 1 << (bits - 1)) for bits in range(top_bits - 1, 1, -1))
    return zip(range(size - 1, 0, -1), itertools.chain.from_iterable(bits_runs))


class FastRandom(random.Random):
    """`random.Random(seed)`, bit for bit, with faster `shuffle` and `randint`."""

    def randint(self, a, b):
        """An int in [a, b], drawn as random.Random.randint draws it."""
        bound = b - a + 1
        if bound <= 0:
            raise ValueError(f"empty range for randint({a}, {b})")
        bits = bound.bit_length()
        getrandbits = self.getrandbits
        value = getrandbits(bits)
        while value >= bound:
            value = getrandbits(bits)
        return a + value

    def shuffle(self, x):
        """Shuffles `x` in place exactly as random.Random.shuffle (Fisher-Yates, backwards)."""
        getrandbits = self.getrandbits
        for i, bits in _descending_draws(len(x)):
            j = getrandbits(bits)
            while j > i:  # rejected: j must be below the bound i + 1
                j = getrandbits(bits)
            x[i], x[j] = x[j], x[i]
