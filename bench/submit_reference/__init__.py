"""A bare submit endpoint, the ceiling `bench/submit_api.py` compares the portal with.

Django and DRF with nothing else: token authentication, a serializer that checks the team is one of
the caller's, one INSERT in a transaction, the created row as JSON. No quotas, templates, limits,
audit, queue or push. Its tables live in a database of its own on the same PostgreSQL server.
"""
