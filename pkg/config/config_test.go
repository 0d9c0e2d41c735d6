package config_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/stickpoint/stickpoint/pkg/config"
)

type inner struct {
	URL     string        `json:"url"`
	Wait    time.Duration `json:"wait"`
	Addrs   []string      `json:"addrs"`
	Enabled bool          `json:"enabled"`
}

type Common struct {
	Region string `json:"region"`
}

type sample struct {
	Common
	Name  string `json:"name"`
	Port  int    `json:"port"`
	NATS  inner  `json:"nats"`
	skip  string //nolint:unused // unexported fields are ignored
	Other string `json:"-"`
}

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.json")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	return p
}

func TestPrecedence(t *testing.T) {
	cfg := sample{Name: "default", Port: 1, NATS: inner{Wait: time.Second}}
	file := write(t, `{"name": "file", "port": 2, "nats": {"url": "nats://file", "addrs": ["a", "b"], "wait": "3s"}}`)
	err := config.Load(&cfg, config.Sources{
		File: file, EnvPrefix: "SP",
		Env: []string{"SP_PORT=3", "SP_NATS_ENABLED=true", "UNRELATED=x"},
		Set: []string{"nats.url=nats://flag"},
	})
	require.NoError(t, err)
	require.Equal(t, "file", cfg.Name)
	require.Equal(t, 3, cfg.Port, "env beats file")
	require.Equal(t, "nats://flag", cfg.NATS.URL, "--set beats file")
	require.Equal(t, []string{"a", "b"}, cfg.NATS.Addrs)
	require.Equal(t, 3*time.Second, cfg.NATS.Wait)
	require.True(t, cfg.NATS.Enabled)
}

func TestErrorsNameTheKey(t *testing.T) {
	cases := map[string]config.Sources{
		`unknown key "nats.urll"`:       {File: write(t, `{"nats": {"urll": "x"}}`)},
		`nats.wait: invalid duration`:   {EnvPrefix: "SP", Env: []string{"SP_NATS_WAIT=soon"}},
		`port: invalid integer`:         {Set: []string{"port=eighty"}},
		`--set: unknown key "bogus"`:    {Set: []string{"bogus=1"}},
		`want key=value`:                {Set: []string{"port"}},
		`nats.enabled: invalid boolean`: {Set: []string{"nats.enabled=maybe"}},
	}
	for want, src := range cases {
		var cfg sample
		require.ErrorContains(t, config.Load(&cfg, src), want)
	}
	var cfg sample
	require.ErrorContains(t, config.Load(&cfg, config.Sources{File: write(t, `{"port": `)}), "config file")
	require.Error(t, config.Load(cfg, config.Sources{}), "a non-pointer is refused")
}

func TestKeys(t *testing.T) {
	cfg := sample{Name: "n", NATS: inner{Addrs: []string{"x", "y"}, Wait: time.Minute}}
	keys := config.Keys(&cfg, "SP")
	paths := map[string]config.Key{}
	for _, k := range keys {
		paths[k.Path] = k
	}
	require.Len(t, keys, 7)
	require.Equal(t, "SP_REGION", paths["region"].Env, "embedded structs' keys are at the parent's level")
	require.Equal(t, "SP_NATS_ADDRS", paths["nats.addrs"].Env)
	require.Equal(t, "x,y", paths["nats.addrs"].Value)
	require.Equal(t, "duration", paths["nats.wait"].Type)
	require.Equal(t, "1m0s", paths["nats.wait"].Value)
}
