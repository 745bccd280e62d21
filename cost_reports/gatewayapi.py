"""The one call the cost service makes to Dask Gateway: stop a cluster whose owner's budget is used up.

The service authenticates with its own hub token; the gateway
(``posehub.gateway.auth``) makes the cost service an admin of the gateway, so
it may stop any user's cluster.
"""

from __future__ import annotations

import os
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest


class GatewayClient:
    def __init__(self, url: str, token: str | None = None):
        self.url = url.rstrip("/")
        self.token = token or os.environ["JUPYTERHUB_API_TOKEN"]
        self.http = AsyncHTTPClient()

    async def stop_cluster(self, name: str) -> None:
        req = HTTPRequest(f"{self.url}/api/v1/clusters/{quote(name)}", method="DELETE",
                          headers={"Authorization": f"jupyterhub {self.token}"}, request_timeout=30)
        resp = await self.http.fetch(req, raise_error=False)
        if resp.code >= 400:
            raise HTTPClientError(resp.code, f"DELETE cluster {name}: {resp.body[:300]!r}", resp)
