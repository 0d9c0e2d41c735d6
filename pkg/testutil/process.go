package testutil

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is a child process a test can SIGKILL and start again with the
// same arguments, as fault tests do.
type Process struct {
	t     testing.TB
	name  string
	bin   string
	args  []string
	env   []string
	log   string
	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{}
	ready string // a stdout line that means "up"; empty: don't wait
}

// NewProcess describes a process; Start runs it. Its output goes to a log
// file that is printed if the test fails.
func NewProcess(t testing.TB, name, bin string, args, env []string, readyLine string) *Process {
	p := &Process{t: t, name: name, bin: bin, args: args, env: env, ready: readyLine,
		log: filepath.Join(t.TempDir(), name+".log")}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("%s output (last 4 KB):\n%s", name, tail(string(b), 4096))
		}
	})
	return p
}

// Start runs the process and, if a ready line was given, waits for it.
func (p *Process) Start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatalf("%s log: %v", p.name, err)
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		p.t.Fatal(err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	ready := make(chan struct{})
	done := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			_, _ = fmt.Fprintln(logf, line)
			if !signalled && p.ready != "" && strings.TrimSpace(line) == p.ready {
				close(ready)
				signalled = true
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		_ = logf.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	if p.ready == "" {
		return
	}
	select {
	case <-ready:
	case <-done:
		b, _ := os.ReadFile(p.log)
		p.t.Fatalf("%s exited before it was ready:\n%s", p.name, tail(string(b), 4096))
	case <-time.After(60 * time.Second):
		p.t.Fatalf("%s not ready within 60s", p.name)
	}
}

// Kill sends SIGKILL and waits for the process to exit. Safe when not running.
func (p *Process) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.cmd = nil
}

// Signal sends sig to the running process, e.g. SIGSTOP and SIGCONT to
// stall it.
func (p *Process) Signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// Exited reports whether a started process has exited by itself.
func (p *Process) Exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return true
	}
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// WaitExit waits up to d for the process to exit by itself.
func (p *Process) WaitExit(d time.Duration) bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return true
	}
	select {
	case <-done:
		p.mu.Lock()
		p.cmd = nil
		p.mu.Unlock()
		return true
	case <-time.After(d):
		return false
	}
}

var (
	buildMu  sync.Mutex
	builtBin = map[string]string{}
)

// GoBinary builds a Go main package once per test binary (and set of build
// flags, e.g. "-tags", "failpoints") and returns the executable's path.
func GoBinary(t testing.TB, pkg string, buildFlags ...string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	key := strings.Join(append([]string{pkg}, buildFlags...), " ")
	if p, ok := builtBin[key]; ok {
		return p
	}
	dir, err := os.MkdirTemp("", "stickpoint-bin-")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	var stderr bytes.Buffer
	cmd := exec.Command("go", append(append([]string{"build", "-o", out}, buildFlags...), pkg)...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go build %s: %v\n%s", key, err, stderr.String())
	}
	builtBin[key] = out
	mu.Lock()
	cleanups = append(cleanups, func() { _ = os.RemoveAll(dir) })
	mu.Unlock()
	return out
}

// NATSServerProcess is a real nats-server (built from its Go module) with
// JetStream, on a free loopback port and a store folder that survives
// Kill and Start.
func NATSServerProcess(t testing.TB) (*Process, string) {
	t.Helper()
	bin := GoBinary(t, "github.com/nats-io/nats-server/v2")
	ports, err := FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("nats://127.0.0.1:%d", ports[0])
	p := NewProcess(t, "nats-server", bin, []string{"-js", "-a", "127.0.0.1", "-p", fmt.Sprint(ports[0]),
		"-sd", t.TempDir(), "--server_name", "fault-test"}, nil, "")
	p.Start()
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", ports[0]))
	return p, url
}

func waitListening(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			_ = c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nothing listening on %s within 30s", addr)
}
