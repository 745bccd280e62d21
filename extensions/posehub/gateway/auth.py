"""Who is asking the gateway: JupyterHub's answer, with the user's groups and admin flag.

Dask Gateway's :class:`JupyterHubAuthenticator` checks the token with the hub
(``GET /hub/api/user``) and requires ``access:services!service=dask-gateway``.
A user's *server* token does not carry ``read:users:groups``, so the groups and
the admin flag, which decide the worker profiles a user may use, are read with
the gateway's own service token. The cost service (a hub service) is made an
admin of the gateway: it stops clusters when their owner's budget is used up.
"""

from __future__ import annotations

from urllib.parse import quote

from dask_gateway_server.auth import JupyterHubAuthenticator
from dask_gateway_server.models import User
from traitlets import List, Unicode

COST_SERVICE = "cost"


class PoseHubUser(User):
    """A gateway user; an admin may see and stop every cluster (the gateway's own User checks the owner only)."""

    def has_permissions(self, cluster):
        return self.admin or super().has_permissions(cluster)


class PoseHubAuthenticator(JupyterHubAuthenticator):
    admin_services = List(Unicode(), [COST_SERVICE], config=True,
                          help="Hub services given admin rights on the gateway (they may stop any cluster).")

    async def authenticate(self, request):
        user = await super().authenticate(request)
        if user.name.startswith("service:"):
            service = user.name.split(":", 1)[1]
            return PoseHubUser(user.name, groups=(), admin=service in self.admin_services)
        resp = await self.session.get(f"{self.jupyterhub_api_url}/users/{quote(user.name)}",
                                      headers={"Authorization": f"token {self.jupyterhub_api_token}"},
                                      ssl=self.ssl_context)
        if resp.status >= 400:
            self.log.warning("could not read groups of %s from the hub: %s", user.name, resp.status)
            return PoseHubUser(user.name)
        model = await resp.json()
        return PoseHubUser(user.name, groups=model.get("groups") or [], admin=bool(model.get("admin")))
