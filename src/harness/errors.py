"""One exception type for bad input, so entry points can print it as one line and exit non-zero."""


class HarnessError(ValueError):
    """A problem with the user's input (config, data, weights, store), found before expensive work."""
