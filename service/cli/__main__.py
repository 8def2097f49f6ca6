"""``python -m service.cli``: the ``descent`` command."""
import sys

from service.cli import main

sys.exit(main())
