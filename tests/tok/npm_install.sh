#!/usr/bin/env bash
# npm_install.sh DIR PKG@VERSION... — installs pinned npm packages into DIR/node_modules once;
# a stamp file records the list, so a second call with the same list does nothing.
# Exit 0 when installed, 1 when npm is missing or the install failed (registry unreachable).
set -uo pipefail
dir=$1; shift
stamp=$dir/.installed
want="$*"
[ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && exit 0
command -v npm >/dev/null 2>&1 || { echo "npm_install: npm not found" >&2; exit 1; }
mkdir -p "$dir"
[ -f "$dir/package.json" ] || echo '{"name":"lb-npm","private":true}' > "$dir/package.json"
echo "npm_install: $* -> $dir" >&2
if ! timeout 600 npm install --prefix "$dir" --no-audit --no-fund --ignore-scripts --no-save "$@" \
        > "$dir/install.log" 2>&1; then
    tail -n 5 "$dir/install.log" >&2
    exit 1
fi
echo "$want" > "$stamp"
