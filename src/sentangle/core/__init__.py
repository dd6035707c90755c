"""The bottom layer: errors, atomic file output, the registry; imports nothing else of sentangle."""
