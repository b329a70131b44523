"""python -m convkit"""

import sys

from convkit.cli.app import main

sys.exit(main())
