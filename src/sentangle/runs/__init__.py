"""Run folders: training over seeds (runner), the checkpoint format, the folder on disk, code
provenance of finished seeds, a seed's stored predictions, and the sanity checks of them."""
