-- Create the second login role of a password rotation, without login until
-- it has a password. Placeholder: role.
CREATE ROLE {role} NOLOGIN;
