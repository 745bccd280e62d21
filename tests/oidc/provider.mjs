// A real OpenID Connect provider for the tests: the npm package oidc-provider (OpenID-certified),
// with its built-in development login pages. Usage: node provider.mjs <settings.json>
//   {"port": 5556, "issuer": "http://127.0.0.1:5556",
//    "clients": [{"client_id": "...", "client_secret": "...", "redirect_uris": ["..."]}],
//    "accounts": {"alice": {"preferred_username": "alice", "groups": ["lab"]}, ...}}
// Any password signs in an account listed in "accounts"; its claims are exactly what is listed
// (an account without "groups" sends no groups claim), read from the file at each request, so a
// test can change them while the provider runs. Consent is granted without asking.
import { readFileSync } from "node:fs";
import Provider from "oidc-provider";

const settings = JSON.parse(readFileSync(process.argv[2], "utf8"));
const accounts = settings.accounts;

const provider = new Provider(settings.issuer, {
  clients: settings.clients.map((c) => ({
    grant_types: ["authorization_code", "refresh_token"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
    ...c,
  })),
  scopes: ["openid", "profile", "email", "groups", "offline_access"],
  claims: {
    openid: ["sub"],
    profile: ["preferred_username", "name"],
    email: ["email", "email_verified"],
    groups: ["groups"],
  },
  async findAccount(ctx, id) {
    // the settings file is read again each time: a test may change an account's claims (groups) meanwhile
    const now = JSON.parse(readFileSync(process.argv[2], "utf8")).accounts;
    if (!Object.hasOwn(now, id)) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...now[id] }; } };
  },
  async loadExistingGrant(ctx) {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope("openid profile email groups");
    grant.addOIDCClaims(["preferred_username", "name", "email", "email_verified", "groups"]);
    await grant.save();
    return grant;
  },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ["posehub-tests-only"] },
  conformIdTokenClaims: false,
});
provider.on("server_error", (ctx, err) => console.error("server_error", err));
provider.listen(settings.port, "127.0.0.1", () => {
  console.log(`oidc-provider listening at ${settings.issuer}`);
});
