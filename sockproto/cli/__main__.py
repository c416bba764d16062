"""``python -m sockproto.cli``: the ``sockproto`` command."""

import sys

from sockproto.cli.main import main

sys.exit(main())
