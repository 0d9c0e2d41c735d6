package sdk_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/stickpoint/stickpoint/pkg/sdk"
)

// Send usage events from a Go service. Here a stand-in endpoint prints what
// arrives; point Endpoint at Stickpoint (make run prints the URL and key).
func Example() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, _, _ := r.BasicAuth()
		fmt.Println(r.Method, r.URL.Path, "key", user, "gzip", r.Header.Get("Content-Encoding") == "gzip")
		_, _ = io.WriteString(w, `{"success":true}`)
	}))
	defer srv.Close()

	client, err := sdk.New(sdk.Config{Endpoint: srv.URL, WriteKey: "wk_example", FlushInterval: time.Second})
	if err != nil {
		panic(err)
	}
	_ = client.Group(sdk.Group{UserID: "u1", GroupID: "acme-co", Traits: map[string]any{"plan": "pro"}})
	_ = client.Track(sdk.Track{UserID: "u1", Event: "Report Built", Properties: map[string]any{"rows": 42}})
	if err := client.Close(); err != nil { // sends what is queued
		panic(err)
	}
	// Output: POST /v1/batch key wk_example gzip true
}
