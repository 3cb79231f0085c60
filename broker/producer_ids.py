"""Producer ids for InitProducerId on a single node.

A random 62-bit starting point, then a counter. A restart picks a new random start, so ids
from before the restart are not handed out again (short of a 1 in 2**30-ish collision of two
random starts within one id range's use). With a controller quorum, blocks of ids will come
from the metadata log instead (AllocateProducerIds).
"""

from __future__ import annotations

import random

PRODUCER_ID_MAX = (1 << 63) - 1


class ProducerIdAllocator:
    def __init__(self, rng: random.Random) -> None:
        self._next_producer_id = rng.getrandbits(62)

    def allocate(self) -> int:
        producer_id = self._next_producer_id
        self._next_producer_id = producer_id + 1 if producer_id < PRODUCER_ID_MAX else 0
        return producer_id
