"""Start the CoDiLA language server.

    python -m lsp_server                                  # stdio (what editors start)
    python -m lsp_server --tcp                            # TCP on 127.0.0.1:2087
    python -m lsp_server --tcp --host 127.0.0.1 --port 9000
    python -m lsp_server --log-file /tmp/codila-lsp.log --log-level debug
    python -m lsp_server --threads 1                      # torch CPU threads (0 = torch's default)

Models and decoding settings come from the editor (initializationOptions / the "codila" settings section),
not from the command line. Logs go to stderr (or --log-file): one JSON line per request on the
`lsp_server.requests` logger. In stdio mode stdout carries only JSON-RPC: anything else that writes to
sys.stdout is sent to stderr instead, and one line on stderr says the server is waiting for an editor (started
in a terminal, it otherwise seems to hang).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from lsp_server.settings import LOG_LEVELS

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
STDIO_BANNER = ("codila-lsp: serving the Language Server Protocol on stdin/stdout; start it from your editor "
                "(README, Editors); Ctrl-D (end of input) stops it")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lsp_server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    # transport
    p.add_argument("--tcp", action="store_true", help="serve on a TCP port instead of stdio")
    p.add_argument("--host", default="127.0.0.1",
                   help="TCP address to bind (default 127.0.0.1, loopback only; 0.0.0.0 exposes the server)")
    p.add_argument("--port", type=int, default=2087, help="TCP port (default 2087)")
    # logging
    p.add_argument("--log-file", default=None, help="append logs to this file instead of stderr")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS,
                   help="initial log level; the editor's codila.logLevel setting replaces it once received")
    # compute
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads for the model (0 = torch's default, one per core); 1 is much faster "
                        "on a machine whose cores are busy with other work")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    handler = logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler(sys.stderr)
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT, handlers=[handler])
    log = logging.getLogger("lsp_server")
    # pygls logs every JSON-RPC message at info (a 5 MB didOpen included): only with --log-level debug
    logging.getLogger("pygls").setLevel(logging.DEBUG if args.log_level == "debug" else logging.WARNING)
    if args.threads < 0:
        sys.exit("python -m lsp_server: --threads must be 0 (torch's default) or more")

    from lsp_server.server import server

    server.engine.lifecycle.threads = args.threads

    if args.tcp:
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("binding to %s: the server is reachable from other machines", args.host)
        server.start_tcp(args.host, args.port)
        return
    # on stderr (stdout is the JSON-RPC stream) as a log record, whichever file the logs go to: editors read
    # the server's stderr by level, and this line is information, not an error
    banner = logging.LogRecord("lsp_server", logging.INFO, __file__, 0, STDIO_BANNER, None, None)
    sys.stderr.write(logging.Formatter(LOG_FORMAT).format(banner) + "\n")
    sys.stderr.flush()
    # JSON-RPC gets its own copy of stdout; file descriptor 1 and sys.stdout then point at stderr, so a
    # stray print() or C-level write from any library cannot corrupt the stream
    rpc_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    server.start_io(sys.stdin.buffer, rpc_out)


if __name__ == "__main__":
    main()
