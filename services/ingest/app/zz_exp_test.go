package app_test

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stickpoint/stickpoint/pkg/chstore"
	"github.com/stickpoint/stickpoint/pkg/natsjs"
	"github.com/stickpoint/stickpoint/services/ingest/app"
	"github.com/stickpoint/stickpoint/services/ingest/loadgen"
)

func TestZZAPI(t *testing.T) {
	if os.Getenv("ZZEXP") == "" {
		t.Skip()
	}
	batch, _ := strconv.Atoi(os.Getenv("ZZBATCH"))
	conc, _ := strconv.Atoi(os.Getenv("ZZCONC"))
	f := newFixture(t, chstore.EngineEmbedded, func(c *app.Config) { c.HTTP.RatePerSecond = 0; c.Writer.Enabled = os.Getenv("ZZWRITER") != "" },
		func(c *natsjs.Config) { c.SyncAlways = os.Getenv("ZZSYNC") != "" })
	before := f.streamLastSeq(t)
	res, err := loadgen.Run(t.Context(), loadgen.Options{URL: f.url, WriteKey: f.keyA, Concurrency: conc, Batch: batch, Duration: 6 * time.Second})
	require.NoError(t, err)
	t.Logf("%s; %d messages", res, f.streamLastSeq(t)-before)
}
