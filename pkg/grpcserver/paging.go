package grpcserver

import (
	"encoding/base64"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Page reads a List request's page size (0 means 100, at most 1000) and
// page token (the key the previous page ended after), as InvalidArgument
// errors a caller can act on.
func Page(size int32, token string) (int, string, error) {
	switch {
	case size == 0:
		size = 100
	case size < 0 || size > 1000:
		return 0, "", status.Errorf(codes.InvalidArgument, "page_size %d is not between 1 and 1000", size)
	}
	after, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return 0, "", status.Error(codes.InvalidArgument, "page_token is not one this API gave")
	}
	return int(size), string(after), nil
}

// PageToken is the token of a page that ended after the key last.
func PageToken(last string) string { return base64.RawURLEncoding.EncodeToString([]byte(last)) }
