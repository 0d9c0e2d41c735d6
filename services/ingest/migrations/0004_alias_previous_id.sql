-- An alias call's previousId: the anonymous or old id that userId replaces.
ALTER TABLE events ADD COLUMN previous_id String;
