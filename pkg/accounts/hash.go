package accounts

import "github.com/go-faster/city"

// traitsHash identifies a traits JSON text. It is ClickHouse's own
// cityHash64 (the 18.16 server has no xxHash64), so the migration that
// filled account_traits from SQL hashed alike; stored, it must never change.
func traitsHash(traits []byte) uint64 { return city.CH64(traits) }
