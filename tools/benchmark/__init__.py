"""The speed benchmark (`python -m tools.benchmark`) and the reference implementations it compares with:
`jax_reference` (JAX + Flax + optax, in the authors' structure), `fql_reference` (plain JAX + optax: the FQL
repository's IQL update with impala_small encoders) and `torch_reference` (eager PyTorch, in CORL's style),
installed with the `bench` extra and used for nothing else."""
