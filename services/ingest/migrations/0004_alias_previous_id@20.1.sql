-- An alias call's previousId: the anonymous or old id that userId replaces.
ALTER TABLE events ADD COLUMN IF NOT EXISTS previous_id String;
