"""The database: tables, the engine wrapper and the queries.

Query functions take an open connection and never commit: the service that
calls them owns the transaction (see :meth:`mailsched.store.db.Database.run`).
"""
