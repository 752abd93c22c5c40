// The control plane: CA, store, enrollment, agent channel and admin API.
export { MeshServer } from './mesh-server';
export { loadServerConfig, SERVER_DEFAULTS, SERVER_SETTINGS, type ServerConfig } from './server-config';
