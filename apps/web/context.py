"""What every route of the web app reaches through `Depends(web)`: the node's port, the
accounts file, the limits and the settings, held on the app's state."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fastapi import Request

from .accounts import Accounts
from .limits import LoginThrottle, RateLimiter
from .port import CurationPort
from .settings import WebSettings

__all__ = ["WebContext", "web"]


@dataclass
class WebContext:
    port: CurationPort
    accounts: Accounts
    settings: WebSettings
    limiter: RateLimiter
    logins: LoginThrottle
    hashing: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.hashing = asyncio.Semaphore(self.settings.hashing_slots)


async def web(request: Request) -> WebContext:
    # async: FastAPI runs a plain `def` dependency on its thread pool, a thread hop on
    # every request for an attribute read
    context = request.app.state.web
    assert isinstance(context, WebContext)
    return context
