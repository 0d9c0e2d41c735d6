// Package smtpsink is an SMTP server on loopback that keeps the mail it
// gets: the real far end of the e-mail channel in tests.
package smtpsink

import (
	"io"
	"net"
	"sync"

	"github.com/emersion/go-smtp"
)

// Mail is one message taken.
type Mail struct {
	From string
	To   []string
	Data []byte
}

// Sink keeps mail.
type Sink struct {
	Addr   string
	server *smtp.Server
	mu     sync.Mutex
	mail   []Mail
}

// Start listens on a free loopback port.
func Start() (*Sink, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Sink{Addr: l.Addr().String()}
	s.server = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &session{sink: s}, nil }))
	s.server.Domain = "localhost"
	s.server.AllowInsecureAuth = true
	go func() { _ = s.server.Serve(l) }()
	return s, nil
}

// Close stops the server.
func (s *Sink) Close() error { return s.server.Close() }

// Mail returns the messages taken.
func (s *Sink) Mail() []Mail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Mail(nil), s.mail...)
}

type session struct {
	sink *Sink
	cur  Mail
}

func (s *session) Reset()        { s.cur = Mail{} }
func (s *session) Logout() error { return nil }
func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	s.cur.From = from
	return nil
}
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.cur.To = append(s.cur.To, to)
	return nil
}
func (s *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.cur.Data = b
	s.sink.mu.Lock()
	s.sink.mail = append(s.sink.mail, s.cur)
	s.sink.mu.Unlock()
	return nil
}
