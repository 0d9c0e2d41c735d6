-- Newer engines take this variant; the 18.16 server keeps the base file.
ALTER TABLE things ADD COLUMN IF NOT EXISTS note String DEFAULT 'new server';
