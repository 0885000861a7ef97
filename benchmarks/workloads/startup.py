"""startup: one call of a function that returns its argument (start-up cost)."""


def target(x):
    return x


args = [0]
