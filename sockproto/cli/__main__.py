# -*- test-case-name: tests.test_cli_e2e -*-
"""``python -m sockproto.cli``: the ``sockproto`` command."""

import sys

from sockproto.cli import main

sys.exit(main())
