"""`python -m pyinfer serve ...`: the same commands as the `pyinfer` script."""

from pyinfer.cli import main

main()
