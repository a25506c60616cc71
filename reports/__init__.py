"""Comparison reports built from MLflow runs: tables with intervals, tests and plots."""
