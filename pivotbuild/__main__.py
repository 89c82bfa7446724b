"""``python -m pivotbuild`` runs the command line."""

from pivotbuild.entry import main

main()
