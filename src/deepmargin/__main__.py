"""``python -m deepmargin ...``: the same as the ``deepmargin`` command."""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
