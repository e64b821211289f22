// A local OpenID Connect provider (the certified npm package oidc-provider) for the portal's
// sign-in tests and for trying single sign-on in development. NOT for production: its sign-in
// page (devInteractions) takes any password, and its signing keys are made up at start.
//
//   PORT=9400 PORTAL_URL=http://127.0.0.1:8000 node provider.js
//
// Environment:
//   PORT            port on 127.0.0.1 (default 9400); the issuer is http://127.0.0.1:PORT
//   PORTAL_URL      the portal's address; its callback and post-sign-out pages are registered
//   CLIENT_ID       default "grid-portal"
//   CLIENT_SECRET   default "grid-portal-dev-secret"
//   ACCOUNTS        JSON object: login -> claims, replacing the built-in accounts below
//
// The portal's side: OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_SERVER_URL=http://127.0.0.1:PORT,
// OIDC_SCOPES="openid profile email groups" (docs/security.md, "Single sign-on").
import Provider from 'oidc-provider';

const port = Number(process.env.PORT || 9400);
const issuer = `http://127.0.0.1:${port}`;
const portal = (process.env.PORTAL_URL || 'http://127.0.0.1:8000').replace(/\/$/, '');

const defaultAccounts = {
  ada: {
    preferred_username: 'ada',
    name: 'Ada Lovelace',
    email: 'ada@example.org',
    email_verified: true,
    groups: ['grid-vision', 'grid-render-lead', 'grid-nosuchteam', 'staff', 'grid-operators'],
  },
  grace: {
    preferred_username: 'grace',
    name: 'Grace Hopper',
    email: 'grace@example.org',
    email_verified: true,
    groups: ['grid-vision'],
  },
};
const accounts = process.env.ACCOUNTS ? JSON.parse(process.env.ACCOUNTS) : defaultAccounts;

const configuration = {
  clients: [
    {
      client_id: process.env.CLIENT_ID || 'grid-portal',
      client_secret: process.env.CLIENT_SECRET || 'grid-portal-dev-secret',
      client_name: 'GPU Grid Portal',
      redirect_uris: [`${portal}/accounts/oidc/sso/login/callback/`],
      post_logout_redirect_uris: [`${portal}/accounts/login/`],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    },
  ],
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  scopes: ['openid', 'profile', 'email', 'groups'],
  async findAccount(ctx, id) {
    const claims = accounts[id];
    if (!claims) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...claims }; } };
  },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  // Cookie signing keys for a throw-away development provider.
  cookies: { keys: ['oidc-dev-provider-cookie-key'] },
};

const provider = new Provider(issuer, configuration);
provider.on('server_error', (ctx, error) => console.error('server_error', error));
const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-dev-provider: ${issuer}/.well-known/openid-configuration (portal ${portal})`);
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
