// Transparent capture: iptables nat rules that lead apps' TCP through the agent, virtual IPs and the DNS responder for service names.
export { CaptureController, type CaptureStatus } from './capture-controller';
export { planCapture, type CaptureSettings, type CaptureSubject, type CapturePlan } from './capture-plan';
export { chainRules, installScript, removeScript, captureState, OUTPUT_CHAIN, INBOUND_CHAIN, type CaptureRules, type CaptureState, type CapturedDestination } from './capture-rules';
export { installCapture, removeCapture, readCaptureState } from './iptables';
export { answerQuery, meshNameLookup, DnsResponder, type NameAnswer } from './dns-responder';
export { assignVirtualIps, parseCidr } from './virtual-ips';
