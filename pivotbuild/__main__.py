"""``python -m pivotbuild`` runs the command line."""

from pivotbuild.cli import main

main()
