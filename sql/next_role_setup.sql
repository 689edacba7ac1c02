-- Make the second login role act as the owner role: a member of it that
-- switches to it at login, so that every object it creates belongs to the
-- owner. Both statements may run again without harm.
-- Placeholders: role, owner (an identifier), owner_name (a literal).
GRANT {owner} TO {role};
ALTER ROLE {role} SET role = {owner_name};
