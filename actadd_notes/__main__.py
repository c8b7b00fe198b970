"""`python -m actadd_notes`: the same command line as `actadd-notes`."""

from actadd_notes.cli import main

main()
