"""Python's `random.Random` draws, reproduced exactly and faster.

`random.Random` is a Mersenne Twister (MT19937); `random()`, `randint()` and `shuffle()` are thin
functions of its 32-bit output words. `FastRandom` takes the generator's state, produces the same
words in bulk with NumPy's MT19937, and computes the draws from them in tight loops without
per-draw function calls. Each method consumes exactly the words CPython 3.11's consumes, so an
algorithm that calls these methods in the reference's order produces the reference's results.
"""

import random

import numpy as np

_WORDS_PER_REFILL = 1 << 16
# For a shuffle's draw at index i (bound i + 1): the shift that keeps bit_length(i + 1) bits.
_SHIFTS_BY_INDEX = [32 - (i + 1).bit_length() for i in range(1 << 12)]
_RES53_SCALE = 1.0 / 9007199254740992.0  # 2**-53


class FastRandom:
    """`random.Random(seed)`'s `random`, `randint` and `shuffle`, bit for bit."""

    def __init__(self, seed):
        version, state, _ = random.Random(seed).getstate()
        if version != 3 or len(state) != 625:
            raise RuntimeError(f"unexpected random.Random state version {version}")
        self._generator = np.random.MT19937()
        self._generator.state = {
            "bit_generator": "MT19937",
            "state": {"key": np.asarray(state[:624], dtype=np.uint32), "pos": state[624]},
        }
        self._words = []
        self._next = 0

    def _refill(self, needed):
        """Makes at least `needed` unread words available."""
        unread = self._words[self._next:]
        count = max(_WORDS_PER_REFILL, needed)
        self._words = unread + self._generator.random_raw(count).tolist()
        self._next = 0

    def random(self):
        """A float in [0, 1) from two words (CPython's genrand_res53)."""
        if self._next + 2 > len(self._words):
            self._refill(2)
        words, n = self._words, self._next
        self._next = n + 2
        return ((words[n] >> 5) * 67108864.0 + (words[n + 1] >> 6)) * _RES53_SCALE

    def randint(self, low, high):
        """An int in [low, high], by rejection sampling of (high - low + 1).bit_length() bits."""
        bound = high - low + 1
        if bound <= 0:
            raise ValueError(f"empty range for randint({low}, {high})")
        shift = 32 - bound.bit_length()
        if shift < 0:
            raise ValueError("FastRandom.randint supports ranges below 2**32")
        while True:
            if self._next >= len(self._words):
                self._refill(1)
            value = self._words[self._next] >> shift
            self._next += 1
            if value < bound:
                return low + value

    @staticmethod
    def _extend_shift_table(size):
        _SHIFTS_BY_INDEX.extend(32 - (i + 1).bit_length()
                                for i in range(len(_SHIFTS_BY_INDEX), size))

    def shuffle(self, items):
        """Shuffles `items` in place exactly as random.Random.shuffle (Fisher-Yates, backwards)."""
        size = len(items)
        if size >= 1 << 32:
            raise ValueError("FastRandom.shuffle supports fewer than 2**32 items")
        # Every draw takes one word, plus one per rejection (each accepted with p >= 1/2).
        if self._next + 4 * size + 64 > len(self._words):
            self._refill(4 * size + 64)
        words = self._words
        n = self._next
        if size > len(_SHIFTS_BY_INDEX):
            self._extend_shift_table(size)
        shifts = _SHIFTS_BY_INDEX
        for i in range(size - 1, 0, -1):
            j = words[n] >> shifts[i]
            n += 1
            while j > i:  # rejected: j must be below the bound i + 1
                if n >= len(words):
                    self._next = n
                    self._refill(4 * i + 64)
                    words, n = self._words, self._next
                j = words[n] >> shifts[i]
                n += 1
            items[i], items[j] = items[j], items[i]
        self._next = n
