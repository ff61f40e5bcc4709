-- 0004: uploads of cold files to object storage (`export.remote`).
--
-- Why: a file must reach the bucket exactly once, and local retention may
-- remove it only after it did. `uploadedAt` (UTC ns, NULL: not uploaded)
-- lives on the file's manifest row, so the upload and the file's removal
-- see one truth; the uploader sets it only after the object store
-- acknowledged the whole object.
ALTER TABLE exports ADD COLUMN uploadedAt INTEGER;
-- The uploader's work list: complete files not uploaded yet, oldest first.
CREATE INDEX exports_not_uploaded ON exports (partitionStart, id) WHERE uploadedAt IS NULL;
