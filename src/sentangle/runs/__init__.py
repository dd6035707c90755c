"""Run folders: training over seeds (runner), the checkpoint format, the folder on disk, code
provenance of finished seeds, and the sanity checks of a seed's predictions."""
