-- End the sessions that logged in as a role, other than this one, and count
-- them. Parameter: role.
SELECT count(pg_terminate_backend(pid)) AS ended
FROM pg_stat_activity
WHERE usename = %(role)s
  AND pid <> pg_backend_pid()
