"""Subcommand modules of `mathpo`; each has `register(subparsers)` and a `run(args)`."""
