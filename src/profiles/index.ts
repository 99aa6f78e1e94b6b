// SPDX-License-Identifier: Apache-2.0
// Mesh profiles and per-pod policy: the one import other modules use.
export { PolicyError } from './errors.ts';
export {
  parseIp, parseCidr, formatIp, formatCidr, cidrContains, unmapV4, compareCidr,
  type IpAddr, type Cidr,
} from './ip.ts';
export {
  profileNames, getProfile, customProfile, validateProfile, detectProfile, DIALECTS,
  type Profile, type Dialect, type SidecarHint, type CustomProfileOptions,
} from './profiles.ts';
export { parseAnnotations, DIALECT_ANNOTATIONS, type AnnotationSpec, type ParsedAnnotations } from './annotations.ts';
export { resolvePodPolicy, capturesInbound, capturesOutbound, type PodPolicy, type PolicyOverrides } from './policy.ts';
