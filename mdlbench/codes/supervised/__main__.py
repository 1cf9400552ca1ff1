"""``python -m mdlbench.codes.supervised {run,decode}``: see :mod:`mdlbench.codes.supervised.cli`."""

import sys

from mdlbench.codes.supervised.cli import main

sys.exit(main())
