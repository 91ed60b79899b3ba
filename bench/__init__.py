"""runyard's benchmark suite: `make bench` measures everything and writes docs/benchmarks.md."""
