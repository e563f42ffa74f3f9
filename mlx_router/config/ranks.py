"""Which rank of a distributed launch this process is, read from the environment the launcher set (no mlx here:
the command line decides from it whether to serve HTTP or follow rank 0)."""

from __future__ import annotations

from collections.abc import Mapping

GROUP_LOST_EXIT = 4  # every process's exit status when the group broke up (a rank died or hung)

# mlx.launch sets MLX_RANK for its ring, JACCL and NCCL backends; mpirun sets Open MPI's or MPICH's own.
RANK_VARIABLES = ("MLX_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")


def launch_rank(env: Mapping[str, str]) -> int | None:
    """This process's rank, or None when it was not launched as one rank of several."""
    for name in RANK_VARIABLES:
        value = env.get(name)
        if value is not None and value.strip():
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"{name}={value!r} is not a rank number") from None
    return None
