"""FQL's IQL (JAX) run from its own code in its own venv, as a peer to iql-tf on the same OGBench data.

A developer's tool, from a checkout only (`python -m tools.fql_peer --help`); iql_tf never imports it.
"""
