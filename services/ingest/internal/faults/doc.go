// Package faults holds the ingest fault tests of RELIABILITY.md (R1, R2, R5,
// R6): real nats-server, clickhouse-server and ingest processes, killed
// with SIGKILL under load. It has no code of its own.
package faults
