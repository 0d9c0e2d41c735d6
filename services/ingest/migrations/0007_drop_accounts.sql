-- account_traits (0006) replaced it.
DROP TABLE IF EXISTS accounts;
