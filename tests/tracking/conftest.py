"""The attack-loop fixtures (toy dataset, SQLite store, registered linear model), shared with tests/evaluation."""

from tests.evaluation.conftest import registered_toy_model, store, toy_data, toy_source  # noqa: F401
