"""``python -m sockproto.cli``: the ``sockproto`` command."""

import sys

from sockproto.cli import main

sys.exit(main())
