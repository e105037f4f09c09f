"""`python -m services.cli`: the same as the `baton` command."""

from services.cli import main

main()
