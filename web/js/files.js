// Fetching the page's files: a small file fetched past every cache (it says which version of the
// big files is current), and big files kept in the browser's Cache API under a name that changes
// with the files themselves, so that a repeat visit downloads nothing and a rebuilt bundle is
// fetched again. Without the Cache API (a page not served from a secure origin), plain fetches.

import { errorText } from './ui.js';

const CACHE_PREFIX = 'ega-';

export class MissingFile extends Error {}

async function fetchResponse(url, init) {
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw new MissingFile(`${url} could not be fetched (${errorText(err)})`);
  }
  if (!response.ok) throw new MissingFile(`${url} is missing (HTTP ${response.status})`);
  return response;
}

export async function fetchFresh(url) {
  return new Uint8Array(await (await fetchResponse(url, { cache: 'no-store' })).arrayBuffer());
}

// The body of a response, read in chunks so that `progress(bytes)` can follow the download.
async function readBody(response, progress) {
  if (!response.body || !progress) return new Uint8Array(await response.arrayBuffer());
  const reader = response.body.getReader();
  const chunks = [];
  let length = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    length += value.byteLength;
    progress(value.byteLength);
  }
  const bytes = new Uint8Array(length);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  return bytes;
}

// A short digest of a small file: the revision its big files are kept under.
export async function digest(bytes) {
  if (!crypto.subtle) return String(bytes.length);
  const hash = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return [...hash.slice(0, 8)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

// Whether cache `key` holds a revision of `family`: `ega-<family>@<revision>`, or the
// `ega-<family>-<hex digest>` of earlier pages. A bare prefix test would take another family
// whose name starts with this one's (`openmoji-lm`'s files for `openmoji`'s old revision).
function ofFamily(key, family) {
  const legacy = key.startsWith(`${CACHE_PREFIX}${family}-`) && /^[0-9a-f]+$/.test(key.slice(CACHE_PREFIX.length + family.length + 1));
  return key.startsWith(`${CACHE_PREFIX}${family}@`) || legacy;
}

async function openCache(family, revision) {
  if (typeof caches === 'undefined') return null;
  try {
    const name = `${CACHE_PREFIX}${family}@${revision}`;
    for (const old of await caches.keys()) {
      if (ofFamily(old, family) && old !== name) await caches.delete(old);
    }
    return await caches.open(name);
  } catch (err) {
    return null; // storage refused (private mode, quota): fetch as usual
  }
}

// The store of one family of files (`family`: a gallery, the lab's model, the WebGPU module) at one
// `revision`; older revisions of the family are deleted. `log` ({hits, misses, files}) counts
// where each file came from (the page publishes it as window.egaCache for the browser test).
export async function openStore(log, family, revision) {
  const cache = await openCache(family, revision);
  return {
    async fetch(url, progress) {
      if (cache) {
        const hit = await cache.match(url);
        if (hit) {
          log.hits += 1;
          log.files[url] = 'cache';
          const bytes = new Uint8Array(await hit.arrayBuffer());
          if (progress) progress(bytes.length);
          return bytes;
        }
      }
      const response = await fetchResponse(url, { cache: 'no-store' });
      const bytes = await readBody(response, progress);
      log.misses += 1;
      log.files[url] = 'network';
      if (cache) {
        const type = response.headers.get('content-type') || 'application/octet-stream';
        await cache.put(url, new Response(bytes, { headers: { 'content-type': type } })).catch(() => {});
      }
      return bytes;
    },
  };
}
