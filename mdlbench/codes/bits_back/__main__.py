"""``python -m mdlbench.codes.bits_back {run,decode}``: see :mod:`mdlbench.codes.bits_back.cli`."""

import sys

from mdlbench.codes.bits_back.cli import main

sys.exit(main())
