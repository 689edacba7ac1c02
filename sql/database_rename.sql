-- Give the restored database its final name and clear the restore mark.
-- Placeholders: source, target.
ALTER DATABASE {source} RENAME TO {target};
COMMENT ON DATABASE {target} IS NULL;
