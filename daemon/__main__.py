"""`python -m daemon` is `podspool`."""

from podspool.daemon.cli.main import main

if __name__ == "__main__":
    main()
