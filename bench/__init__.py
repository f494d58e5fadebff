"""Benchmarks. Run `./dev bench` (all) or `./dev bench proxy` / `./dev bench policy`."""
