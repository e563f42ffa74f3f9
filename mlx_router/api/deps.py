"""FastAPI dependencies: the server's services, taken from the app state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mlx_router.services import Services


async def get_services(request: Request) -> Services:
    # async: FastAPI runs a plain function dependency on a worker thread, a thread hop for every request
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
