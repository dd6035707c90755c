"""Feature extractors for `sentangle extract`."""
