-- Whether uuid-ossp is installed in the connected database.
SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'uuid-ossp') AS installed
