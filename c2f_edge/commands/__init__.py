"""One module per subcommand. Each defines `register(subparsers)` that sets `func` on its parser,
and optionally `ORDER` (sort key in --help). New modules here are picked up automatically."""
