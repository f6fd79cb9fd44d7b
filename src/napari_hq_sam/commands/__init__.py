"""Subcommands of the ``hqsam`` console script, one module each."""
