"""Options inside the script, a generator of arguments, and pass-through arguments.

    clum examples/options_and_argv.py -- 1000     # sys.argv[1] is "1000"
"""

import sys

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100

clum_options = {"processes": 2, "target": "square"}  # the command line wins over these


def square(i, out=None):
    return i * i


def numbers():  # a zero-argument function that returns an iterable works as args too
    return ((i,) for i in range(N))


args = numbers
