"""`python -m stream.cli`: the `recast` command."""

import sys

from stream.cli.main import main

sys.exit(main())
