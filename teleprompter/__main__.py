"""`python -m teleprompter` runs the command line."""

from teleprompter.cli import main

main()
