-- Input images (image-to-video, first-last-frame) and the second guidance scale
-- (two-expert models). job_inputs holds each image a job was submitted with, fitted to
-- the video's size and stored as PNG, written in the submission's transaction; reads
-- that show a job use jobs.inputs (name, sha256, width, height as JSON) and never the
-- bytes, which only a worker's lease loads. Retention deletes a job's rows when it
-- purges its prompt (and blanks jobs.inputs), as does closing its account.
-- migrations/sqlite/0013_job_inputs.sql is the same schema for SQLite:
-- change both together.

ALTER TABLE jobs ADD COLUMN guidance_scale_2 DOUBLE PRECISION;
ALTER TABLE jobs ADD COLUMN inputs TEXT NOT NULL DEFAULT '[]';

CREATE TABLE job_inputs (
    job_id  TEXT NOT NULL REFERENCES jobs(id),
    -- The request field: 'image' (the first frame) or 'last_image'.
    name    TEXT NOT NULL CHECK (name IN ('image', 'last_image')),
    png     BYTEA NOT NULL,
    -- Lowercase hex SHA-256 of png.
    sha256  TEXT NOT NULL,
    width   BIGINT NOT NULL,
    height  BIGINT NOT NULL,
    PRIMARY KEY (job_id, name)
);
