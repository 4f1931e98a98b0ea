"""`python -m tinyvmm`: the command line."""

import sys

try:
    from .cli import main
except KeyboardInterrupt:           # Ctrl-C while Python is still loading tinyvmm
    sys.exit(130)

sys.exit(main())
