-- Allow an existing role to log in. Placeholder: role.
ALTER ROLE {role} LOGIN;
