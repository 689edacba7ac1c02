-- Owner, encoding and comment of a database. Parameter: database.
SELECT pg_get_userbyid(datdba) AS owner,
       pg_encoding_to_char(encoding) AS encoding,
       shobj_description(oid, 'pg_database') AS comment
FROM pg_database
WHERE datname = %(database)s
