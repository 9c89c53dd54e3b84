// Transport references, skopeo style (`oci:DIR:TAG`, `docker://HOST/REPO:TAG`…) plus the store transports
// (`dir:`, `s3://`, `store:`), parsed into a tagged union before anything touches a path, a bucket or a socket.
//
// Why the splitting rules are what they are:
// - `oci:`, `oci-archive:` and `docker-archive:` split PATH from REF at the FIRST `:` after the transport, exactly
//   like containers/image does on Linux (checked against skopeo 1.9: `oci:/x:a:b` opens `/x` with image `a:b`).
//   A path containing `:` therefore cannot be named, in skopeo or here; sharing the rule keeps every reference that
//   works with skopeo meaning the same thing here. A REF that parses as a digest (`sha256:<hex>`) names a digest.
// - `docker://` follows the distribution/reference normalization (docker.io, `library/`, `latest`), because users
//   type the names they use with docker.
// - Store references must say where the store ends and the repository begins, and a repository may contain `/`.
//   Rule: an explicit `//` marks the boundary (`dir:/srv/ts//library/busybox:1.36`); without it the repository is
//   the last path component (`s3://bucket/prefix/busybox:1.36`). Repository names and tags are validated with the
//   distribution grammar (src/core/names.ts), which keeps `..`, uppercase and leading `/` out of keys and paths.
import { TransshipError, isTransshipError } from '@transship/core/errors';
import { parseDigest } from '@transship/core/digest';
import { validateRepoName, validateTag } from '@transship/core/names';
import { bucketProblem, isDigestReference, prefixProblem, regionProblem, type StoreLocation } from '@transship/core/reference';

export type { StoreLocation };

export type Transport = 'oci' | 'oci-archive' | 'docker-archive' | 'docker' | 'dir' | 's3' | 'store';

/** A tag or a digest; both undefined means "whatever the source holds, if it holds exactly one image". */
export interface RefTarget {
  tag?: string | undefined;
  digest?: string | undefined;
}

export interface OciLayoutReference extends RefTarget {
  transport: 'oci';
  path: string;
}

export interface OciArchiveReference extends RefTarget {
  transport: 'oci-archive';
  path: string;
}

export interface DockerArchiveReference {
  transport: 'docker-archive';
  path: string;
  /** A RepoTag to select, normalized (`docker.io/library/busybox:latest`). */
  name?: string | undefined;
  /** `@N`: the N-th image of manifest.json. */
  index?: number | undefined;
}

export interface DockerReference extends RefTarget {
  transport: 'docker';
  /** Registry as named in the reference (`docker.io`, `localhost:5000`). */
  registry: string;
  /** Host[:port] the API is served from (`registry-1.docker.io` for docker.io). */
  endpoint: string;
  repo: string;
}

export interface StoreReference extends RefTarget {
  transport: 'dir' | 's3' | 'store';
  location: StoreLocation;
  repo: string;
  region?: string | undefined;
}

export type ImageReference = OciLayoutReference | OciArchiveReference | DockerArchiveReference | DockerReference;
export type Reference = ImageReference | StoreReference;

export const EXPECTED_FORMS: Record<Transport, string> = {
  oci: 'oci:DIR[:TAG|:sha256:HEX]',
  'oci-archive': 'oci-archive:FILE[:TAG|:sha256:HEX]',
  'docker-archive': 'docker-archive:FILE[:NAME[:TAG]|:@INDEX]',
  docker: 'docker://[HOST[:PORT]/]REPO[:TAG|@sha256:HEX]',
  dir: 'dir:PATH/REPO[:TAG|@sha256:HEX] (or dir:PATH//NAMESPACE/REPO:TAG when the repository has several components)',
  s3: 's3://BUCKET[/PREFIX]/REPO[:TAG|@sha256:HEX] (or s3://BUCKET[/PREFIX]//NAMESPACE/REPO:TAG)',
  store: 'store[@REGION]:REPO[:TAG|@sha256:HEX]',
};

const ALL_FORMS = Object.values(EXPECTED_FORMS).join(', ');

function bad(input: string, why: string, transport?: Transport): TransshipError {
  const expected = transport ? EXPECTED_FORMS[transport] : ALL_FORMS;
  return new TransshipError('TS_INVALID_REFERENCE', `invalid reference "${clip(input)}": ${why}; expected ${expected}`, {
    details: { reference: clip(input), ...(transport ? { transport } : {}) },
  });
}

function clip(s: string): string {
  return s.length > 200 ? `${s.slice(0, 200)}…` : s;
}

/** Re-throws name/tag/digest validation errors with the reference and its expected form in the message (same code). */
function withForm<T>(input: string, transport: Transport, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (isTransshipError(err) && err.code !== 'TS_INVALID_REFERENCE') {
      throw new TransshipError(err.code, `${err.message} in reference "${clip(input)}"; expected ${EXPECTED_FORMS[transport]}`, {
        cause: err,
        details: { ...err.details, reference: clip(input), transport },
      });
    }
    throw err;
  }
}

function checkPath(input: string, path: string, transport: Transport): string {
  if (path.length === 0) throw bad(input, 'the path is empty', transport);
  if (path.includes('\0')) throw bad(input, 'the path contains a NUL byte', transport);
  return path;
}

/** `REF` after an oci:/oci-archive: path: a digest when it parses as one, otherwise a tag. */
function ociTarget(input: string, ref: string | undefined, transport: Transport): RefTarget {
  if (ref === undefined) return {};
  if (ref.length === 0) throw bad(input, 'the tag after ":" is empty', transport);
  if (isDigestReference(ref)) {
    return { digest: withForm(input, transport, () => parseDigest(ref).value) };
  }
  return { tag: withForm(input, transport, () => validateTag(ref)) };
}

function splitFirstColon(rest: string): [string, string | undefined] {
  const i = rest.indexOf(':');
  return i === -1 ? [rest, undefined] : [rest.slice(0, i), rest.slice(i + 1)];
}

/** Parses any supported reference; throws TS_INVALID_REFERENCE (or TS_INVALID_NAME/TAG/DIGEST) otherwise. */
export function parseReference(input: string): Reference {
  if (typeof input !== 'string' || input.length === 0) throw bad(String(input), 'the reference is empty');
  if (input.length > 4096) throw bad(input, 'the reference is longer than 4096 characters');
  if (input.startsWith('docker://')) return parseDockerReference(input);
  if (input.startsWith('s3://') || input.startsWith('dir:') || input.startsWith('store:') || input.startsWith('store@')) {
    return parseStoreReference(input);
  }
  const colon = input.indexOf(':');
  const transport = colon === -1 ? '' : input.slice(0, colon);
  const rest = input.slice(colon + 1);
  switch (transport) {
    case 'oci':
    case 'oci-archive': {
      const [path, ref] = splitFirstColon(rest);
      return { transport, path: checkPath(input, path, transport), ...ociTarget(input, ref, transport) };
    }
    case 'docker-archive':
      return parseDockerArchive(input, rest);
    case 'docker':
      throw bad(input, 'docker references start with "docker://"', 'docker');
    default:
      throw bad(input, transport ? `unknown transport "${transport}"` : 'no transport prefix');
  }
}

/** Like parseReference, but only for transports a copy can read from or write to as an image (not stores). */
export function parseImageReference(input: string): ImageReference {
  const ref = parseReference(input);
  if (isStoreReference(ref)) throw bad(input, `"${ref.transport}" names a store, not an image transport`);
  return ref;
}

export function isStoreReference(ref: Reference): ref is StoreReference {
  return ref.transport === 'dir' || ref.transport === 's3' || ref.transport === 'store';
}

function parseDockerArchive(input: string, rest: string): DockerArchiveReference {
  const [path, ref] = splitFirstColon(rest);
  checkPath(input, path, 'docker-archive');
  if (ref === undefined) return { transport: 'docker-archive', path };
  if (ref.startsWith('@')) {
    const n = ref.slice(1);
    if (!/^(0|[1-9][0-9]{0,5})$/.test(n)) throw bad(input, `"@${n}" is not an image index`, 'docker-archive');
    return { transport: 'docker-archive', path, index: Number(n) };
  }
  const named = parseDockerName(input, ref, 'docker-archive');
  if (named.digest) throw bad(input, 'a docker-archive reference names a RepoTag, not a digest', 'docker-archive');
  return { transport: 'docker-archive', path, name: `${named.registry}/${named.repo}:${named.tag ?? 'latest'}` };
}

const HOST_RE = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?$/;

/** distribution/reference's ParseNormalizedNamed, reduced to what we need. */
function parseDockerName(input: string, name: string, transport: Transport): { registry: string; repo: string; tag?: string; digest?: string } {
  if (name.length === 0) throw bad(input, 'the image name is empty', transport);
  let rest = name;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    const d = rest.slice(at + 1);
    digest = withForm(input, transport, () => parseDigest(d).value);
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    const t = rest.slice(colon + 1);
    tag = withForm(input, transport, () => validateTag(t));
    rest = rest.slice(0, colon);
  }
  if (tag !== undefined && digest !== undefined) throw bad(input, 'give a tag or a digest, not both', transport);
  let registry = 'docker.io';
  let path = rest;
  const slash = rest.indexOf('/');
  if (slash !== -1) {
    const first = rest.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost' || first !== first.toLowerCase()) {
      if (!HOST_RE.test(first)) throw bad(input, `"${first}" is not a valid registry host`, transport);
      registry = first === 'index.docker.io' ? 'docker.io' : first;
      path = rest.slice(slash + 1);
    }
  }
  if (path.length === 0) throw bad(input, 'the repository is empty', transport);
  if (registry === 'docker.io' && !path.includes('/')) path = `library/${path}`;
  const repo = withForm(input, transport, () => validateRepoName(path));
  return { registry, repo, ...(tag !== undefined ? { tag } : {}), ...(digest !== undefined ? { digest } : {}) };
}

/** `busybox` → `docker.io/library/busybox:latest`; undefined when `name` is not a docker name (RepoTags matching). */
export function normalizeDockerName(name: string): string | undefined {
  try {
    const n = parseDockerName(name, name, 'docker');
    return n.digest ? `${n.registry}/${n.repo}@${n.digest}` : `${n.registry}/${n.repo}:${n.tag ?? 'latest'}`;
  } catch {
    return undefined;
  }
}

function parseDockerReference(input: string): DockerReference {
  const named = parseDockerName(input, input.slice('docker://'.length), 'docker');
  return {
    transport: 'docker',
    registry: named.registry,
    endpoint: named.registry === 'docker.io' ? 'registry-1.docker.io' : named.registry,
    repo: named.repo,
    ...(named.digest !== undefined ? { digest: named.digest } : { tag: named.tag ?? 'latest' }),
  };
}

/** `REPO[:TAG|@DIGEST]` with the default tag `latest`. */
function repoTarget(input: string, spec: string, transport: Transport): { repo: string } & RefTarget {
  let rest = spec;
  let target: RefTarget;
  const slash = rest.lastIndexOf('/');
  const at = rest.indexOf('@', slash + 1);
  const colon = rest.indexOf(':', slash + 1);
  if (at !== -1) {
    const d = rest.slice(at + 1);
    target = { digest: withForm(input, transport, () => parseDigest(d).value) };
    rest = rest.slice(0, at);
    if (rest.slice(slash + 1).includes(':')) throw bad(input, 'give a tag or a digest, not both', transport);
  } else if (colon !== -1) {
    const t = rest.slice(colon + 1);
    target = { tag: withForm(input, transport, () => validateTag(t)) };
    rest = rest.slice(0, colon);
  } else {
    target = { tag: 'latest' };
  }
  if (rest.length === 0) throw bad(input, 'the repository is empty', transport);
  return { repo: withForm(input, transport, () => validateRepoName(rest)), ...target };
}

/** Splits `LOCATION/REPO` or `LOCATION//NAMESPACE/REPO` (see the header comment). */
function splitLocation(input: string, body: string, transport: Transport): [string, string] {
  const sep = body.indexOf('//', 1);
  if (sep !== -1) return [body.slice(0, sep), body.slice(sep + 2)];
  // The tag may not contain '/', but a digest cannot either, so the last '/' is the boundary.
  const slash = body.lastIndexOf('/');
  if (slash === -1) throw bad(input, 'no repository after the store location', transport);
  return [slash === 0 ? '/' : body.slice(0, slash), body.slice(slash + 1)];
}

/** Bucket, prefix and region rules are core/reference.ts's, shared with store arguments and the config. */
function checkPrefix(input: string, prefix: string): string {
  const problem = prefixProblem(prefix);
  if (problem) throw bad(input, problem, 's3');
  return prefix;
}

export function parseStoreReference(input: string): StoreReference {
  if (input.startsWith('dir:')) {
    const body = input.slice(4);
    if (body.length === 0) throw bad(input, 'the path is empty', 'dir');
    const [path, spec] = splitLocation(input, body, 'dir');
    checkPath(input, path, 'dir');
    return { transport: 'dir', location: { kind: 'dir', path }, ...repoTarget(input, spec, 'dir') };
  }
  if (input.startsWith('s3://')) {
    const body = input.slice(5);
    const slash = body.indexOf('/');
    if (slash === -1) throw bad(input, 'no repository after the bucket', 's3');
    const bucket = body.slice(0, slash);
    const bucketBad = bucketProblem(bucket);
    if (bucketBad) throw bad(input, bucketBad, 's3');
    const after = body.slice(slash + 1);
    let prefix = '';
    let spec = after;
    if (after.startsWith('/')) {
      spec = after.slice(1);
    } else if (after.includes('/')) {
      [prefix, spec] = splitLocation(input, after, 's3');
    }
    return { transport: 's3', location: { kind: 's3', bucket, prefix: checkPrefix(input, prefix) }, ...repoTarget(input, spec, 's3') };
  }
  const m = /^store(?:@([^:]*))?:(.*)$/s.exec(input);
  if (m) {
    const region = m[1];
    const regionBad = region === undefined ? undefined : regionProblem(region);
    if (regionBad) throw bad(input, regionBad, 'store');
    const spec = m[2] ?? '';
    return {
      transport: 'store',
      location: { kind: 'configured', ...(region !== undefined ? { region } : {}) },
      ...(region !== undefined ? { region } : {}),
      ...repoTarget(input, spec, 'store'),
    };
  }
  throw bad(input, 'not a store reference', undefined);
}

/** The canonical string of a reference, for messages and `description`. */
export function formatReference(ref: Reference): string {
  const target = (t: RefTarget, sep: ':' | '@'): string => (t.digest ? `${sep === '@' ? '@' : ':'}${t.digest}` : t.tag ? `:${t.tag}` : '');
  switch (ref.transport) {
    case 'oci':
    case 'oci-archive':
      return `${ref.transport}:${ref.path}${target(ref, ':')}`;
    case 'docker-archive':
      return `docker-archive:${ref.path}${ref.name ? `:${ref.name}` : ref.index !== undefined ? `:@${ref.index}` : ''}`;
    case 'docker':
      return `docker://${ref.registry}/${ref.repo}${target(ref, '@')}`;
    case 'dir':
    case 's3':
    case 'store': {
      const loc = ref.location;
      const where =
        loc.kind === 'dir' ? `dir:${loc.path}//` : loc.kind === 's3' ? `s3://${loc.bucket}/${loc.prefix ? `${loc.prefix}//` : ''}` : `store${loc.region ? `@${loc.region}` : ''}:`;
      return `${where}${ref.repo}${target(ref, '@')}`;
    }
  }
}
