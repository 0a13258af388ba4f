"""Fuzz campaign size: small in `make test`, 100 000+ per target in `make fuzz`."""

from __future__ import annotations

import datetime as dt
import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("CMCP_FUZZ_EXAMPLES", "1000"))

fuzz_settings = settings(
    max_examples=EXAMPLES,
    deadline=dt.timedelta(seconds=10),  # an input that takes this long is a hang
    derandomize=EXAMPLES <= 1000,  # make test is reproducible; campaigns explore
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
