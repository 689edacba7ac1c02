-- Create the database, owned by the application role. template0 is required
-- to choose an encoding other than template1's. Placeholders: database, role.
CREATE DATABASE {database} OWNER {role} ENCODING 'UTF8' TEMPLATE template0;
