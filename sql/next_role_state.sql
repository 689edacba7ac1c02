-- The second login role of a password rotation: whether it can log in, its
-- stored verifier, whether it is a member of the owner role, and whether it
-- switches to the owner role at login (ALTER ROLE ... SET role).
-- Reading pg_authid needs a superuser. Parameters: role, owner.
SELECT r.rolcanlogin AS can_login,
       r.rolsuper AS is_superuser,
       r.rolpassword AS password_verifier,
       pg_has_role(r.oid, o.oid, 'MEMBER') AS is_member,
       EXISTS (
           SELECT 1
           FROM pg_db_role_setting s
           WHERE s.setrole = r.oid
             AND s.setdatabase = 0
             AND ('role=' || o.rolname) = ANY (s.setconfig)
       ) AS sets_role
FROM pg_authid r
CROSS JOIN pg_roles o
WHERE r.rolname = %(role)s
  AND o.rolname = %(owner)s
