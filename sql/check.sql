-- psql script run on each swarm manager as the application role by db.check.
-- Output lines: check|value|extra. Variable: schema, a throwaway schema name.
\set ON_ERROR_STOP 1
SELECT 'version', current_setting('server_version_num'), current_setting('server_version');
SELECT 'encoding', pg_encoding_to_char(encoding), ''
FROM pg_database WHERE datname = current_database();
SELECT 'connections', current_setting('max_connections'),
       current_setting('superuser_reserved_connections')::int
       + coalesce(current_setting('reserved_connections', true)::int, 0);
-- The schema never outlives the transaction.
BEGIN;
CREATE SCHEMA :"schema";
DROP SCHEMA :"schema";
ROLLBACK;
SELECT 'create_schema', 'ok', '';
