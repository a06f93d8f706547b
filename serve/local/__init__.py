"""A local harness, not part of the service: a private Ray head with the app on loopback, for
`make demo`, benchmarks and tests (`service.py`), and the demo itself (`demo.py`)."""
