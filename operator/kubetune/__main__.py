"""`python -m kubetune` is the `kubetune` command."""

from .cli import main

main()
