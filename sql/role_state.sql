-- The application role and its stored password verifier (pg_authid needs a superuser).
-- Parameter: role.
SELECT rolcanlogin AS can_login,
       rolsuper AS is_superuser,
       rolpassword AS password_verifier
FROM pg_authid
WHERE rolname = %(role)s
