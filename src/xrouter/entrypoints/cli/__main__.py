"""`python -m xrouter.entrypoints.cli`: the same as the `xrouter` console script."""

import sys

from xrouter.entrypoints.cli.main import main

sys.exit(main())
