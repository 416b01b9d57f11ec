#!/usr/bin/env bash
# Creates the prefect and mlflow roles and databases on the first start of the `postgres`
# service (an empty data volume); the official image runs /docker-entrypoint-initdb.d/*.sh
# once, as the superuser. Passwords come from the service environment (infra/.env.example).
# To re-run it, remove the volume: `docker compose down -v` (this deletes both databases).
set -euo pipefail

: "${PREFECT_DB_PASSWORD:?PREFECT_DB_PASSWORD must be set}"
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD must be set}"

# psql variables (:'name') quote the passwords, so any character is safe in SQL. The
# databases are owned by their roles; neither role is a superuser.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v prefect_pw="$PREFECT_DB_PASSWORD" -v mlflow_pw="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE prefect LOGIN PASSWORD :'prefect_pw';
CREATE DATABASE prefect OWNER prefect;
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_pw';
CREATE DATABASE mlflow OWNER mlflow;
-- Prefect's migrations create pg_trgm (a trusted extension); created here up front anyway.
\connect prefect
CREATE EXTENSION IF NOT EXISTS pg_trgm;
SQL
