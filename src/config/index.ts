// Config parsing shared by the agent and server: files, durations, addresses, field validation.
export { parseDuration, formatDuration } from './duration';
export { parseHostPort, formatHostPort, type HostPort } from './host-port';
export { readConfigFile, parseConfigText, emptySource, type ConfigSource } from './config-source';
export { FieldReader, ProblemList, overlay, deepFreeze, type ConfigProblem } from './field-reader';
export { readLayers, flagKey, type LayeredSetting, type LayeredInput } from './layered-config';
