// The control plane: CA, store, enrollment, agent channel and admin API.
export { MeshServer } from './mesh-server';
export { loadServerConfig, SERVER_DEFAULTS, SERVER_SETTINGS, type HaConfig, type ServerConfig } from './server-config';
export { migrateToHa, type MigrationReport } from './ha/migrate-to-ha';
