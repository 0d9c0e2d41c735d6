package loadgen

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// conn is one keep-alive HTTP/1.1 connection, as an SDK's pool holds,
// that sends a request and reads its answer in the calling goroutine.
//
// Why not net/http's client: it hands each request between three
// goroutines (the caller, the connection's writer and its reader). The
// load generator shares the machine with the server it measures, and with
// single-event requests from 64 clients on two cores that hand-off was a
// quarter of all CPU, which then looked like the server's limit. A
// connection that writes and reads in place costs a write and a read.
type conn struct {
	addr string      // host:port to dial
	tls  *tls.Config // nil for http
	head []byte      // the request line and headers, up to Content-Length's value
	nc   net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
}

// requestTimeout bounds one request, from its first byte to its answer.
const requestTimeout = 30 * time.Second

// newConn prepares connections that post to base's /v1/batch (a path in
// base is kept as a prefix) with the write key as Basic auth.
func newConn(base, writeKey string) (*conn, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("loadgen: the URL %q is not http://host[:port] or https://host[:port]", base)
	}
	c := &conn{addr: u.Host}
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		c.addr = net.JoinHostPort(u.Hostname(), port)
	}
	if u.Scheme == "https" {
		c.tls = &tls.Config{ServerName: u.Hostname()}
	}
	auth := base64.StdEncoding.EncodeToString([]byte(writeKey + ":"))
	c.head = []byte("POST " + strings.TrimSuffix(u.EscapedPath(), "/") + "/v1/batch HTTP/1.1\r\nHost: " + u.Host +
		"\r\nUser-Agent: stickpoint-load\r\nAuthorization: Basic " + auth + "\r\nContent-Type: application/json\r\nContent-Length: ")
	return c, nil
}

// aLongTimeAgo is a deadline in the past: it ends a blocked read or write.
var aLongTimeAgo = time.Unix(1, 0)

// post sends body and returns the answer's status. An error means no
// answer (status 0); the connection is then closed and the next post
// dials again. A post waiting when ctx ends returns at once.
func (c *conn) post(ctx context.Context, body []byte) (int, error) {
	if c.nc == nil {
		if err := c.dial(ctx); err != nil {
			return 0, err
		}
	}
	nc := c.nc
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(aLongTimeAgo) })
	defer stop()
	if err := nc.SetDeadline(time.Now().Add(requestTimeout)); err != nil {
		c.close()
		return 0, err
	}
	_, _ = c.w.Write(c.head)
	_, _ = c.w.WriteString(strconv.Itoa(len(body)))
	_, _ = c.w.WriteString("\r\n\r\n")
	_, _ = c.w.Write(body)
	if err := c.w.Flush(); err != nil {
		c.close()
		return 0, fmt.Errorf("send the request: %w", err)
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		c.close()
		return 0, fmt.Errorf("read the answer: %w", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		c.close()
		return 0, fmt.Errorf("read the answer: %w", err)
	}
	if resp.Close {
		c.close() // the server ends the connection: dial again next time
	}
	return resp.StatusCode, nil
}

func (c *conn) dial(ctx context.Context) error {
	d := net.Dialer{Timeout: 10 * time.Second}
	var nc net.Conn
	var err error
	if c.tls != nil {
		td := tls.Dialer{NetDialer: &d, Config: c.tls}
		nc, err = td.DialContext(ctx, "tcp", c.addr)
	} else {
		nc, err = d.DialContext(ctx, "tcp", c.addr)
	}
	if err != nil {
		return err
	}
	c.nc, c.r, c.w = nc, bufio.NewReaderSize(nc, 16<<10), bufio.NewWriterSize(nc, 64<<10)
	return nil
}

func (c *conn) close() {
	if c.nc != nil {
		_ = c.nc.Close()
		c.nc = nil
	}
}
