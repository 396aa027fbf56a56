"""The store: run directory layout and atomic writes, run status, the training process's writer, job records."""
