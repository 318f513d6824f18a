"""`python -m build_assets` runs the CLI."""

import sys

from build_assets.cli.main import main

sys.exit(main())
