// Repository names and tags, validated against the OCI distribution-spec grammar before they touch a key or a
// path. The grammar has no `..`, no leading `/`, no uppercase, which is what keeps hostile names out of the tree.
import { TransshipError } from './errors.js';

const NAME_COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const NAME_RE = new RegExp(`^${NAME_COMPONENT}(?:/${NAME_COMPONENT})*$`);
const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
export const MAX_NAME_LENGTH = 255;

export function validateRepoName(name: string): string {
  if (typeof name !== 'string' || name.length === 0) throw new TransshipError('TS_INVALID_NAME', 'repository name is empty');
  if (name.length > MAX_NAME_LENGTH) {
    throw new TransshipError('TS_INVALID_NAME', `repository name is ${name.length} characters long; the limit is ${MAX_NAME_LENGTH}`, { details: { name: name.slice(0, 64) } });
  }
  if (!NAME_RE.test(name)) {
    throw new TransshipError('TS_INVALID_NAME', `invalid repository name "${name}": use lowercase letters, digits and separators (. _ __ -) in path components separated by "/"`, { details: { name } });
  }
  return name;
}

export function validateTag(tag: string): string {
  if (typeof tag !== 'string' || !TAG_RE.test(tag)) {
    throw new TransshipError('TS_INVALID_TAG', `invalid tag "${String(tag).slice(0, 140)}": up to 128 characters of [A-Za-z0-9_.-], not starting with "." or "-"`, { details: { tag } });
  }
  return tag;
}

export function isValidRepoName(name: string): boolean {
  return name.length <= MAX_NAME_LENGTH && NAME_RE.test(name);
}

/**
 * Region names (config `region`, `regions`, placement rules; `store@REGION:` references): lowercase letters, digits
 * and "-", starting with a letter or digit, at most 63 characters. One pattern for every place that reads one: the
 * config accepted `eu-` while `copy store@eu-:…` rejected it. The config's (permissive) rule is the one kept, because
 * rejecting a name a running configuration already uses would stop that deployment at start-up.
 */
export const REGION_NAME_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;
export const REGION_NAME_RULE = 'lowercase letters, digits and "-", starting with a letter or digit, at most 63 characters';

export function isValidRegionName(name: string): boolean {
  return typeof name === 'string' && REGION_NAME_RE.test(name);
}
