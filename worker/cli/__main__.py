"""`python -m worker.cli`: the `astria-queue` command."""

from worker.cli import main

main()
