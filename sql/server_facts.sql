-- Facts about the server and the connected user, read before any change.
SELECT current_setting('server_version_num')::int AS version_num,
       current_setting('server_version') AS version,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS is_superuser,
       EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'uuid-ossp')
           AS has_uuid_ossp
