// Wire formats shared by the agent and the server.
export * from './channel-messages';
export type { StatsMessage } from './stats-message';
export * from './policy-digest';
export * from './gossip-messages';
export { MESH_COMMIT, MESH_VERSION } from './version';
export { bearerToken, readBody, sendJson, sendError, requireBearer } from './http-json';
