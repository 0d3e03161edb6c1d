"""The ``semaflow`` command line: run the whole stack, manage it."""
