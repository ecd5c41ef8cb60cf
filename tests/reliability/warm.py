"""Imported once by the fork server of forked.py: everything a child would otherwise import or set up on its own
first use (MLflow's SQL store and its ORM mappers, matplotlib's Agg backend), so each child starts in a moment."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot  # noqa: E402, F401
import mlflow.store.model_registry.sqlalchemy_store  # noqa: E402, F401
import mlflow.store.tracking.sqlalchemy_store  # noqa: E402, F401
import sqlalchemy.orm  # noqa: E402

import mlattack.cli  # noqa: E402, F401
import mlattack.evaluation.runner  # noqa: E402, F401

sqlalchemy.orm.configure_mappers()
