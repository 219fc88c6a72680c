"""``python -m sim.cli``: the ``agentsim`` command line."""

import sys

from sim.cli.main import main

sys.exit(main())
