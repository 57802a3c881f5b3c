"""Dev tooling: throwaway local servers (`localservers`, for `make run`, the tests and the
benchmarks) and `make run` itself (`devrun`). Never imported by the apps."""
