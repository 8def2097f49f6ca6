"""What the tests and the benchmarks share, so benchmarks import no test module: backends
(embedded settings, fresh PostgreSQL databases, Redis), the service in real processes, private
servers to stop and restart, and the hostile expression corpus. Not part of the package."""
