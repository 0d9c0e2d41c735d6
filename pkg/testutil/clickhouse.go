// Package testutil starts the real components Stickpoint's tests run
// against: a clickhouse-server process on free loopback ports, the embedded
// ClickHouse engine, and an embedded NATS server. Nothing here mocks them.
// A missing component fails the test with the command that installs it; it
// never skips.
package testutil

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/stickpoint/stickpoint/pkg/chstore"
)

// Main runs a package's tests and then stops the processes testutil
// started for them. Use it from TestMain: os.Exit(testutil.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	shutdown()
	return code
}

// MainWithLeakCheck is Main for packages that start goroutines: after the
// tests pass, it fails the run if any goroutine was left behind.
func MainWithLeakCheck(m *testing.M) int {
	code := Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			return 1
		}
	}
	return code
}

var (
	mu          sync.Mutex
	chServer    *clickhouseServer
	chServerErr error
	embeddedDir string
	dbSeq       atomic.Int64
	cleanups    []func()
)

func shutdown() {
	mu.Lock()
	defer mu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	cleanups = nil
	chServer, chServerErr, embeddedDir = nil, nil, ""
}

// Engines are the ClickHouse engines every store-touching test runs on.
var Engines = []string{chstore.EngineEmbedded, chstore.EngineServer}

// ForEachEngine runs f as a subtest on each engine, with a store on a fresh
// database of its own.
func ForEachEngine(t *testing.T, f func(t *testing.T, s chstore.Store)) {
	t.Helper()
	for _, engine := range Engines {
		t.Run(engine, func(t *testing.T) { f(t, Store(t, engine)) })
	}
}

// Store opens a store on engine, on a database no other test uses, dropped
// when the test ends.
func Store(t testing.TB, engine string) chstore.Store {
	t.Helper()
	cfg := StoreConfig(t, engine)
	s, err := chstore.Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("open %s clickhouse: %v", engine, err)
	}
	t.Cleanup(func() {
		_ = s.Exec(context.Background(), "DROP DATABASE IF EXISTS "+cfg.Database)
		_ = s.Close()
	})
	return s
}

// StoreConfig is the configuration of a store on engine with a database of
// its own, for tests that open the store themselves (e.g. through a
// service's config).
func StoreConfig(t testing.TB, engine string) chstore.Config {
	t.Helper()
	cfg := chstore.DefaultConfig()
	cfg.Engine = engine
	cfg.Database = fmt.Sprintf("t_%d_%d", os.Getpid(), dbSeq.Add(1))
	switch engine {
	case chstore.EngineEmbedded:
		cfg.LibPath = chdbLib(t)
		cfg.DataDir = embeddedDataDir(t)
	case chstore.EngineServer:
		cfg.Addr = []string{ClickHouseServer(t)}
	default:
		t.Fatalf("unknown clickhouse engine %q", engine)
	}
	return cfg
}

func chdbLib(t testing.TB) string {
	t.Helper()
	p := chstore.DefaultLibPath()
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("embedded ClickHouse library missing at %s: run `make chdb` (make test does it): %v", p, err)
	}
	return p
}

// chDB supports one data folder per process, so tests share one and keep
// apart by database.
func embeddedDataDir(t testing.TB) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if embeddedDir == "" {
		dir, err := os.MkdirTemp("", "stickpoint-chdb-")
		if err != nil {
			t.Fatalf("embedded clickhouse data dir: %v", err)
		}
		embeddedDir = dir
		cleanups = append(cleanups, func() { _ = os.RemoveAll(dir) })
	}
	return embeddedDir
}

type clickhouseServer struct {
	addr   string
	cmd    *exec.Cmd
	dir    string
	exited chan error
}

// stop ends the server (SIGTERM, then SIGKILL after 10 s) and removes its folder.
func (s *clickhouseServer) stop() {
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case err := <-s.exited:
		_ = err // exit status of a signalled server says nothing useful
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		_ = waitExit(s.exited)
	}
	_ = os.RemoveAll(s.dir)
}

// ClickHouseServer returns the native-protocol address of a clickhouse-server
// process that this test binary started on free loopback ports, starting it
// on first use. testutil.Main stops it.
func ClickHouseServer(t testing.TB) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if chServer == nil && chServerErr == nil {
		chServer, chServerErr = startClickHouseServer()
		if chServer != nil {
			s := chServer
			cleanups = append(cleanups, s.stop)
		}
	}
	if chServerErr != nil {
		t.Fatalf("clickhouse-server: %v", chServerErr)
	}
	return chServer.addr
}

// ClickHouseServerBinary finds clickhouse-server: $STICKPOINT_CLICKHOUSE_SERVER,
// then PATH, then /usr/sbin and /usr/bin.
func ClickHouseServerBinary() (string, error) {
	if p := os.Getenv("STICKPOINT_CLICKHOUSE_SERVER"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("clickhouse-server"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("clickhouse-server not found: run `make test-deps` (it installs Debian's clickhouse-server) or set STICKPOINT_CLICKHOUSE_SERVER")
}

func startClickHouseServer() (*clickhouseServer, error) {
	bin, err := ClickHouseServerBinary()
	if err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a free port can be taken between pick and bind
		s, err := tryStartClickHouseServer(bin)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func tryStartClickHouseServer(bin string) (*clickhouseServer, error) {
	dir, err := os.MkdirTemp("", "stickpoint-clickhouse-server-")
	if err != nil {
		return nil, err
	}
	ports, err := FreePorts(2)
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	config := strings.NewReplacer("{dir}", dir, "{tcp}", fmt.Sprint(ports[0]), "{http}", fmt.Sprint(ports[1])).Replace(serverConfig)
	if err := os.WriteFile(filepath.Join(dir, "config.xml"), []byte(config), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "users.xml"), []byte(serverUsers), 0o644); err != nil {
		return nil, err
	}
	s, err := runClickHouseServer(bin, dir, addr)
	if err != nil {
		_ = os.RemoveAll(dir)
	}
	return s, err
}

// runClickHouseServer starts bin on the configuration in dir and waits
// until it listens on addr.
func runClickHouseServer(bin, dir, addr string) (*clickhouseServer, error) {
	logf, err := os.OpenFile(filepath.Join(dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer func() { _ = logf.Close() }()
	cmd := exec.Command(bin, "--config-file="+filepath.Join(dir, "config.xml"))
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the test binary dies, the server goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	s := &clickhouseServer{addr: addr, cmd: cmd, dir: dir, exited: exited}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			return nil, fmt.Errorf("clickhouse-server exited during start (%v): %s", err, tail(string(log), 2000))
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			_ = c.Close()
			return s, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	_ = waitExit(exited)
	return nil, fmt.Errorf("clickhouse-server did not listen on %s within 30s", addr)
}

// ClickHouseProcess is a clickhouse-server of one test's own, which the
// test can kill and start again on the same data and ports (fault tests).
type ClickHouseProcess struct {
	t   testing.TB
	bin string
	mu  sync.Mutex
	srv *clickhouseServer
	dir string
	// Addr is its native-protocol address.
	Addr string
}

// NewClickHouseProcess starts a clickhouse-server for t alone; it is
// stopped and its folder removed when t ends.
func NewClickHouseProcess(t testing.TB) *ClickHouseProcess {
	t.Helper()
	bin, err := ClickHouseServerBinary()
	if err != nil {
		t.Fatalf("clickhouse-server: %v", err)
	}
	s, err := startClickHouseServer()
	if err != nil {
		t.Fatalf("clickhouse-server: %v", err)
	}
	p := &ClickHouseProcess{t: t, bin: bin, srv: s, dir: s.dir, Addr: s.addr}
	t.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.srv != nil {
			p.srv.stop()
		}
		_ = os.RemoveAll(p.dir)
	})
	return p
}

// Kill stops the server with SIGKILL and waits for it to exit.
func (p *ClickHouseProcess) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srv == nil {
		return
	}
	_ = syscall.Kill(-p.srv.cmd.Process.Pid, syscall.SIGKILL)
	_ = waitExit(p.srv.exited)
	p.srv = nil
}

// Start starts a killed server again on its data and ports.
func (p *ClickHouseProcess) Start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	s, err := runClickHouseServer(p.bin, p.dir, p.Addr)
	if err != nil {
		p.t.Fatalf("restart clickhouse-server: %v", err)
	}
	p.srv = s
}

func waitExit(exited <-chan error) error { return <-exited }

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// FreePorts returns n distinct free TCP ports on 127.0.0.1.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

const serverConfig = `<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><console>1</console></logger>
  <tcp_port>{tcp}</tcp_port>
  <http_port>{http}</http_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{dir}/data/</path>
  <tmp_path>{dir}/tmp/</tmp_path>
  <user_files_path>{dir}/user_files/</user_files_path>
  <format_schema_path>{dir}/format_schemas/</format_schema_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
`

const serverUsers = `<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><default>
    <password></password>
    <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
    <profile>default</profile><quota>default</quota>
  </default></users>
  <quotas><default><interval>
    <duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
  </interval></default></quotas>
</yandex>
`
