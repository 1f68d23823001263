"""The optimization-phase catalogue: `python -m workbench.bench list | run | TOPIC`."""
