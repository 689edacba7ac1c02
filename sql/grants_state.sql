-- Whether the role has explicit grants of every privilege on the connected
-- database and on schema public. Ownership alone does not count, so that the
-- grants exist even if the owner changes later. Parameter: role.
SELECT
    ARRAY['CONNECT', 'CREATE', 'TEMPORARY'] <@ ARRAY(
        SELECT acl.privilege_type
        FROM pg_database AS d, aclexplode(d.datacl) AS acl
        WHERE d.datname = current_database()
          AND acl.grantee = (SELECT oid FROM pg_roles WHERE rolname = %(role)s)
    ) AS on_database,
    ARRAY['CREATE', 'USAGE'] <@ ARRAY(
        SELECT acl.privilege_type
        FROM pg_namespace AS n, aclexplode(n.nspacl) AS acl
        WHERE n.nspname = 'public'
          AND acl.grantee = (SELECT oid FROM pg_roles WHERE rolname = %(role)s)
    ) AS on_schema
