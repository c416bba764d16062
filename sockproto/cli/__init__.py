"""The ``sockproto`` command and its client tools: connect, probe, scan, kv, cert, passwd.

:mod:`sockproto.cli.main` parses the command line and dispatches;
:mod:`sockproto.cli.net` holds connect, probe and scan; :mod:`sockproto.cli.kv`
talks SPB/1.  The tools import the services' client libraries, never their
servers.
"""
