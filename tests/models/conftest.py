"""Shared set-up for the model tests."""

from tests.threads import single_thread_fixture

single_thread = single_thread_fixture("module")
