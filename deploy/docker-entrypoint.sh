#!/bin/sh
# Container entrypoint: turn EUSDX_<KEY>_FILE=/run/secrets/... into EUSDX_<KEY>=<file content>,
# the convention of the official postgres/redis images, so that compose and Kubernetes secrets
# (database URL with password, broker URL, HMAC key, API tokens) never appear in the image or in
# `docker inspect`. eusdx itself only reads EUSDX_<KEY>.
set -eu
for var in $(env | sed -n 's/^\(EUSDX_[A-Z0-9_]*\)_FILE=.*/\1/p'); do
  file_var="${var}_FILE"
  eval "file=\${$file_var}"
  if [ ! -r "$file" ]; then
    echo "eusdx-entrypoint: $file_var points to unreadable file $file" >&2
    exit 78   # EX_CONFIG
  fi
  eval "already=\${$var:-}"
  if [ -n "$already" ]; then
    echo "eusdx-entrypoint: both $var and $file_var are set; use one" >&2
    exit 78
  fi
  # strip one trailing newline, as `echo secret > file` leaves one
  value=$(cat "$file")
  export "$var=$value"
  unset "$file_var"
done
exec "$@"
