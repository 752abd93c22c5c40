// The per-node agent.
export { MeshAgent } from './mesh-agent';
export { loadAgentConfig, AGENT_DEFAULTS, AGENT_SETTINGS, type AgentConfig, type LocalServiceConfig, type UpstreamConfig } from './agent-config';
export { CertificateManager, type Signer, type CertificateStatus } from './certificate-manager';
export { StateDir, type Enrollment } from './state-dir';
export { systemClock, Backoff, type Clock } from './clock';
