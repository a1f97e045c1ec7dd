"""fast_random.FastRandom: the same draws as random.Random, call for call."""

import random

import pytest

from fast_random import FastRandom


@pytest.mark.parametrize("seed", [0, 12345, 2**40 + 7])
def test_interleaved_draws_equal_random_random(seed):
    """random(), randint() over many bounds (incl. one-value and power-of-two ranges) and
    shuffle() of many sizes, interleaved, give exactly random.Random's results."""
    ours, theirs = FastRandom(seed), random.Random(seed)
    schedule = random.Random(seed + 1)
    for _ in range(3000):
        kind = schedule.randrange(3)
        if kind == 0:
            assert ours.random() == theirs.random()
        elif kind == 1:
            low = schedule.randrange(-5, 5)
            high = low + schedule.choice([0, 1, 2, 3, 7, 8, 100, 30521, 2**20, 2**31, 2**40])
            assert ours.randint(low, high) == theirs.randint(low, high)
        else:
            items = list(range(schedule.choice([0, 1, 2, 5, 64, 127, 500])))
            copy = list(items)
            ours.shuffle(items)
            theirs.shuffle(copy)
            assert items == copy


def test_long_shuffles():
    """Shuffles at and beyond the precomputed draw table (4096 items) stay identical."""
    ours, theirs = FastRandom(7), random.Random(7)
    for size in (4096, 4097, 70_000, 150_000):
        items, copy = list(range(size)), list(range(size))
        ours.shuffle(items)
        theirs.shuffle(copy)
        assert items == copy
    assert ours.random() == theirs.random()


def test_empty_range_rejected():
    """randint on an empty range raises, like random.Random."""
    with pytest.raises(ValueError):
        FastRandom(1).randint(3, 2)
