// The registry's public surface: the fastify plugin and what callers configure it with.
export { registryPlugin, type RegistryPluginOptions } from './plugin.js';
export type { RegistryOptions } from './context.js';
export { RegistryContext } from './context.js';
export { Authenticator, hashPassword, verifyPassword, type AuthConfig, type AccessRule } from './auth.js';
export { metaStoreFor, StoreMetaStore, type MetaStore } from './meta.js';
export { SPEC_ERRORS, RegistryError, toErrorResponse, type SpecCode } from './errors.js';
