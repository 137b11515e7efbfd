"""The loop tests label and evaluate with their own judges (tests/loop/judges_for_tests.py), listed in settings."""
import pytest


@pytest.fixture(autouse=True)
def _test_judges_listed(listed_test_judges):
    return listed_test_judges
