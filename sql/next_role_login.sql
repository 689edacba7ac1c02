-- Let the second login role log in with a new password. {verifier} is a
-- SCRAM-SHA-256 verifier computed by the client, so the password itself never
-- reaches the server or its logs. Placeholders: role, verifier.
ALTER ROLE {role} LOGIN PASSWORD {verifier};
