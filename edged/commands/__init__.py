"""Sub-commands of the `edged` CLI: each module has add_arguments(parser) and run(args) -> exit code."""
