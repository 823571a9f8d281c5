"""`python -m relman` is the same entry point as the `relman` console script."""

from relman.cli import main

if __name__ == "__main__":
    main()
