#!/usr/bin/env bash
# Runs CMD with a throwaway PostgreSQL cluster: starts one (scripts/postgres.sh) in a temporary
# directory, exports its superuser URL as STIGMER_TEST_POSTGRES_URL, runs CMD, then stops the
# cluster and deletes it, also when CMD fails or is interrupted. Exits with CMD's status.
#
#   scripts/with-postgres.sh cargo test -p stigmer-postgres
set -uo pipefail

[ $# -ge 1 ] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d "${TMPDIR:-/tmp}/stigmer-postgres.XXXXXX") || exit 1
cleanup() {
  "$here/postgres.sh" stop "$dir" >/dev/null 2>&1
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

url=$(STIGMER_POSTGRES_THROWAWAY=1 "$here/postgres.sh" start "$dir") || exit 1
export STIGMER_TEST_POSTGRES_URL=$url
"$@"
