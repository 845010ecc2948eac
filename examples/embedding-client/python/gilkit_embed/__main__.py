"""``python -m gilkit_embed serve --model MODULE:CALLABLE [--host H] [--port P]``."""

import sys

from .service import main

sys.exit(main())
