package natsjs

import (
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// CASConflict reports whether a key-value Create or Update lost a race
// with another writer: the caller reads again and retries.
func CASConflict(err error) bool {
	var apiErr *jetstream.APIError
	if errors.Is(err, jetstream.ErrKeyExists) || !errors.As(err, &apiErr) {
		return errors.Is(err, jetstream.ErrKeyExists)
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}
