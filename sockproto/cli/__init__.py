# -*- test-case-name: tests.test_cli_e2e -*-
"""The ``sockproto`` command and its client tools: connect, probe, scan, kv, cert, passwd.

:mod:`sockproto.cli.main` parses the command line and dispatches;
:mod:`sockproto.cli.net` holds connect, probe and scan; :mod:`sockproto.cli.kv`
talks SPB/1.  The tools import the services' client libraries, never their
servers.
"""

import sys


def main() -> int:
    """
    The ``sockproto`` command.

    Ctrl-C ends it at once with status 130, whenever it comes: Twisted is
    imported here, inside the handler, so even an interrupt while it loads
    finishes the terminal's line instead of printing a traceback.
    """
    try:
        from sockproto.cli.main import main as run

        return run()
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        sys.stderr.flush()
        return 130
