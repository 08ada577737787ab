"""``python -m verity`` runs the CLI."""

from verity.cli.main import main

if __name__ == "__main__":
    main()
