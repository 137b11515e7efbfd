"""The chatty tiny model of the CPU sampler tests (samples end at many lengths), for the same checks on CUDA."""
from tests.generation.test_backends import chatty_model_dir  # noqa: F401  (a fixture)
