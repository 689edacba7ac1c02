-- Create the application role. Placeholder: role.
CREATE ROLE {role} LOGIN;
