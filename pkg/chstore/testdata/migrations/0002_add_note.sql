-- The 18.16 server has no ADD COLUMN IF NOT EXISTS.
ALTER TABLE things ADD COLUMN note String DEFAULT 'old server';
