"""adaptbench's harness: config, data, the shared training loop, evaluation and MLflow tracking."""

__version__ = "0.1.0"
