"""Training, adapter and metric tests (a package, so that module names such as
test_adapters and test_training may repeat in tests/faults)."""
