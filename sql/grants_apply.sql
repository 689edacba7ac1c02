-- Run inside the application database. Placeholders: database, role.
GRANT ALL ON DATABASE {database} TO {role};
GRANT ALL ON SCHEMA public TO {role};
