"""The open-file limit is raised at start so that connections beyond server.max_connections are answered
(503) rather than reset by a failing accept; checked in a child process, whose limits are its own."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
from mlx_router.api.connections import raise_fd_limit
print(raise_fd_limit(int(sys.argv[1])), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


@pytest.mark.parametrize("max_connections", [100, 1000])
def test_the_open_file_limit_is_raised_past_the_connections(max_connections: int) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < max_connections + 256:
        pytest.skip(f"hard open-file limit {hard} is too low here")
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(max_connections)], capture_output=True, text=True, check=True
    ).stdout.split()
    returned, in_force = int(out[0]), int(out[1])
    assert returned == in_force
    expected = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    assert in_force == max(expected, max_connections + 256)
