"""Performance-side tests: buffered views, bulk deactivation, and the benchmark's smoke mode."""
