"""`python -m inspector`: the same command line as `tunnel-inspector`."""

import sys

from inspector.cli import main

sys.exit(main())
