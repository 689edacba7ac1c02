-- Stop the second login role from logging in, and drop its password.
-- Placeholder: role.
ALTER ROLE {role} NOLOGIN PASSWORD NULL;
