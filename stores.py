"""The store the settings select: Couchbase when a host is set, else the embedded one.

Apart from the interface (``store.py``), so that it depends on neither implementation.
The chosen store's module is imported only when it is chosen: the SDK loads only when used.
"""

from __future__ import annotations

from typing import Any

from options import Options
from store import Layout, LoadableStore


def open_store(options: Options, tracing: Any = None) -> LoadableStore:
    """``tracing``: what the Couchbase store traces its calls with (``otelexport.StoreTracing``), or None."""
    if options.couchbase_host:
        import cbconn

        return cbconn.CouchbaseStore.from_options(options, tracing)
    import sqlitestore

    return sqlitestore.SQLiteStore(options.db, busy_timeout=options.sqlite_busy_timeout, layout=Layout.of(options))
