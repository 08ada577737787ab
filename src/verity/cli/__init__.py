"""The ``verity`` command line: subcommands derived from typed config dataclasses."""
