-- Drop a database, ending its sessions (WITH (FORCE) needs PostgreSQL 13).
-- Placeholder: database.
DROP DATABASE IF EXISTS {database} WITH (FORCE);
