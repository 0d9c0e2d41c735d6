// Package migrations holds the health-scoring service's ClickHouse schema.
package migrations

import "embed"

// FS holds the versioned migration files.
//
//go:embed *.sql
var FS embed.FS
