"""``python -m mlattack``: the same command as the ``mlattack`` entry point."""

from mlattack.cli import main

if __name__ == "__main__":
    main()
