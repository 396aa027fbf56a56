"""Starting runs as jobs: the launcher and its executors."""
