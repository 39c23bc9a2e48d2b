"""Hypothesis profiles for the fuzz tests: ``ci`` (default, small and reproducible) and ``long``.

``make test`` runs the ``ci`` profile; ``make fuzz`` sets ``HYPOTHESIS_PROFILE=long``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Function-scoped fixtures (the served model) are shared by every example on purpose: the tests
# only read through them, and a model store per example would reload the model each time.
_SHARED = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]

settings.register_profile("ci", max_examples=30, deadline=None, derandomize=True, suppress_health_check=_SHARED)
settings.register_profile("long", max_examples=1000, deadline=None, suppress_health_check=_SHARED)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
