-- Mark a database created by db.restore, so that a later run may drop it if
-- the restore failed half-way. Placeholders: database, marker.
COMMENT ON DATABASE {database} IS {marker};
