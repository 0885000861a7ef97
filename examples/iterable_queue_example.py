"""The IterableQueue example from the README: 17 producers, 13 consumers.

Run it with ``python examples/iterable_queue_example.py`` (from the
repository root, or with cluster-func installed).  Pass ``--start-method
spawn`` (or ``forkserver``) to try another multiprocessing start method.
"""

import argparse
import os
import sys
from multiprocessing import get_context
from random import random
from time import sleep

try:
    from cluster_func import IterableQueue
except ImportError:  # running from a source checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    os.pardir))
    from cluster_func import IterableQueue


NUM_PRODUCERS = 17
NUM_CONSUMERS = 13
ITEMS_PER_PRODUCER = 10


def producer_func(queue, producer_id):
    for i in range(ITEMS_PER_PRODUCER):
        sleep(random() / 100.0)
        queue.put(producer_id)
    queue.close()


def consumer_func(queue, consumer_id, results):
    seen = []
    for item in queue:
        sleep(random() / 100.0)
        print('consumer %d saw item %d' % (consumer_id, item), flush=True)
        seen.append(item)
    # Only for the final check below; not needed to use the queue.
    results.put(seen)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--start-method', default=None,
                        choices=['fork', 'spawn', 'forkserver'])
    args = parser.parse_args(argv)
    ctx = get_context(args.start_method)

    iq = IterableQueue()
    results = ctx.Queue()
    processes = []

    # Start a bunch of producers:
    for producer_id in range(NUM_PRODUCERS):
        # Give each producer a "producer-queue"
        queue = iq.get_producer()
        p = ctx.Process(target=producer_func, args=(queue, producer_id))
        p.start()
        processes.append(p)

    # Start a bunch of consumers
    for consumer_id in range(NUM_CONSUMERS):
        # Give each consumer a "consumer-queue"
        queue = iq.get_consumer()
        p = ctx.Process(target=consumer_func,
                        args=(queue, consumer_id, results))
        p.start()
        processes.append(p)

    # No more endpoints will be made.
    iq.close()

    seen = []
    for _ in range(NUM_CONSUMERS):
        seen.extend(results.get())
    for p in processes:
        p.join()

    expected = sorted(
        producer_id for producer_id in range(NUM_PRODUCERS)
        for _ in range(ITEMS_PER_PRODUCER))
    ok = sorted(seen) == expected
    print('%s: consumers saw %d items, expected %d, each exactly once: %s' % (
        'OK' if ok else 'FAILED', len(seen), len(expected), ok))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
