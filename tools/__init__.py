"""Launchers, benchmarks and analysis scripts. Each runs as ``python tools/<name>.py`` or ``python -m tools.<name>``
and imports as ``tools.<name>`` from the repository root (tests, tools that use one another)."""
