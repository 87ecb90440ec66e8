"""bench: network definitions, timing harness and the table generator (`python -m bench.tables`)."""
