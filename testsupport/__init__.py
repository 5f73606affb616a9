"""Helpers of the tests and the bench: the real services (services.py, plugin.py), the
server and worker processes (processes.py, frontdoor.py), the Kafka reader (kafka.py),
the vote ledger (ledger.py), the Kafka cluster (cluster.py) and the browser (browser.py)."""
