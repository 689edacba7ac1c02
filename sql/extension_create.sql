-- Run inside the application database.
CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
