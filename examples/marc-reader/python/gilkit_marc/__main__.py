"""``python -m gilkit_marc``: the ``gilkit-marc`` command (see ``gilkit_marc.cli``)."""

import sys

from .cli import main

sys.exit(main())
