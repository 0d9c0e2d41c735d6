package delivery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"net/mail"
	"strconv"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"

	alertsv1 "github.com/stickpoint/stickpoint/proto/gen/go/stickpoint/alerts/v1"
	"github.com/stickpoint/stickpoint/services/alerting/internal/config"
	"github.com/stickpoint/stickpoint/services/alerting/internal/lifecycle"
)

// Result is the outcome of one attempt.
type Result struct {
	// Code is the HTTP status or SMTP reply code; 0 when none came.
	Code int
	Err  error
	// RetryAfter is the receiver's Retry-After, when it sent one.
	RetryAfter time.Duration
	// Permanent: retrying can't help (no recipient to send to).
	Permanent bool
}

// Sender sends notifications.
type Sender struct {
	HTTP *http.Client
	Now  func() time.Time
}

// NewSender sends with its own HTTP client; each attempt's deadline is
// the channel's timeout.
func NewSender() *Sender {
	return &Sender{HTTP: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}, Now: time.Now}
}

// Send makes one attempt to notify ch of job about alert a.
func (s *Sender) Send(ctx context.Context, ch *config.Channel, a *alertsv1.Alert, job lifecycle.Job) Result {
	ctx, cancel := context.WithTimeout(ctx, ch.Timeout)
	defer cancel()
	p := NewPayload(a, job, s.Now())
	switch ch.Type {
	case config.Webhook:
		body, _ := json.Marshal(p)
		h := http.Header{}
		h.Set(HeaderSignature, Sign(ch.Secret, p.SentAt, body))
		h.Set(HeaderDeliveryID, job.DeliveryID)
		return s.post(ctx, ch.URL, body, h)
	case config.Slack:
		body, _ := json.Marshal(SlackMessage(p))
		return s.post(ctx, ch.URL, body, http.Header{})
	case config.Email:
		return s.mail(ctx, ch, p)
	}
	return Result{Err: fmt.Errorf("unknown channel type %q", ch.Type), Permanent: true}
}

func (s *Sender) post(ctx context.Context, url string, body []byte, h http.Header) Result {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return Result{Err: err, Permanent: true}
	}
	req.Header = h
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Stickpoint-Alerting/1")
	resp, err := s.HTTP.Do(req)
	if err != nil {
		return Result{Err: err}
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	r := Result{Code: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"), s.Now())}
	if resp.StatusCode/100 != 2 {
		r.Err = fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	return r
}

// retryAfter reads Retry-After: seconds, or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// SlackMessage is an incoming-webhook message in Block Kit: the account,
// kind and owner, the evidence in a few lines, and a link.
func SlackMessage(p Payload) map[string]any {
	a := p.Alert
	title := fmt.Sprintf("%s %s: %s", strings.ToUpper(a.Severity), strings.ReplaceAll(a.Kind, "_", " "), or(a.Account.Name, a.Account.ID))
	if p.Trigger == lifecycle.Escalated {
		title = "Escalated, not acknowledged: " + title
	}
	fields := []map[string]any{
		{"type": "mrkdwn", "text": "*Account*\n" + or(a.Account.Name, a.Account.ID) + " (`" + a.Account.ID + "`)"},
		{"type": "mrkdwn", "text": "*Owner*\n" + or(a.Account.Owner, "nobody")},
	}
	evidence := make([]string, 0, len(a.Evidence))
	for i, line := range a.Evidence {
		if i == 6 {
			evidence = append(evidence, fmt.Sprintf("• … %d more", len(a.Evidence)-i))
			break
		}
		evidence = append(evidence, "• "+line)
	}
	blocks := []map[string]any{
		{"type": "header", "text": map[string]any{"type": "plain_text", "text": truncate(title, 150)}},
		{"type": "section", "text": map[string]any{"type": "mrkdwn", "text": truncate(a.Summary, 3000)}, "fields": fields},
	}
	if len(evidence) > 0 {
		blocks = append(blocks, map[string]any{"type": "section", "text": map[string]any{"type": "mrkdwn", "text": truncate("*Evidence*\n"+strings.Join(evidence, "\n"), 3000)}})
	}
	ctx := fmt.Sprintf("alert `%s` · %s · seen %d time(s)", a.ID, a.State, a.Count)
	if a.Link != "" {
		ctx += fmt.Sprintf(" · <%s|open the account>", a.Link)
	}
	blocks = append(blocks, map[string]any{"type": "context", "elements": []map[string]any{{"type": "mrkdwn", "text": ctx}}})
	return map[string]any{"text": title, "blocks": blocks}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

var mailHTML = template.Must(template.New("mail").Parse(`<!doctype html>
<html><body style="font-family:sans-serif">
<h2>{{.Title}}</h2>
<p>{{.P.Alert.Summary}}</p>
<table>
<tr><td><b>Account</b></td><td>{{or .P.Alert.Account.Name .P.Alert.Account.ID}} ({{.P.Alert.Account.ID}})</td></tr>
<tr><td><b>Owner</b></td><td>{{.P.Alert.Account.Owner}}</td></tr>
<tr><td><b>Severity</b></td><td>{{.P.Alert.Severity}}</td></tr>
<tr><td><b>State</b></td><td>{{.P.Alert.State}}, seen {{.P.Alert.Count}} time(s)</td></tr>
</table>
<h3>Evidence</h3>
<ul>{{range .P.Alert.Evidence}}<li>{{.}}</li>{{end}}</ul>
{{if .P.Alert.Link}}<p><a href="{{.P.Alert.Link}}">Open the account</a></p>{{end}}
<p style="color:#888">Alert {{.P.Alert.ID}} · delivery {{.P.DeliveryID}}</p>
</body></html>`))

func (s *Sender) mail(ctx context.Context, ch *config.Channel, p Payload) Result {
	to := ch.To
	if len(to) == 0 {
		if _, err := mail.ParseAddress(p.Alert.Account.Owner); err != nil {
			return Result{Err: fmt.Errorf("no recipient: the account's owner %q is not an e-mail address (set its owner trait, or the channel's to)", p.Alert.Account.Owner), Permanent: true}
		}
		to = []string{p.Alert.Account.Owner}
	}
	a := p.Alert
	title := fmt.Sprintf("[%s] %s: %s", a.Severity, strings.ReplaceAll(a.Kind, "_", " "), or(a.Account.Name, a.Account.ID))
	if p.Trigger == lifecycle.Escalated {
		title = "Escalated: " + title
	}
	m := gomail.NewMsg()
	if err := m.From(ch.From); err != nil {
		return Result{Err: err, Permanent: true}
	}
	if err := m.To(to...); err != nil {
		return Result{Err: err, Permanent: true}
	}
	m.Subject(title)
	m.SetDate()
	m.SetMessageIDWithValue(p.DeliveryID + "@stickpoint")
	m.SetGenHeader(gomail.Header(HeaderDeliveryID), p.DeliveryID)
	text := a.Summary + "\n\nAccount: " + or(a.Account.Name, a.Account.ID) + " (" + a.Account.ID + ")\nOwner: " + a.Account.Owner +
		"\nSeverity: " + a.Severity + "\n\nEvidence:\n- " + strings.Join(a.Evidence, "\n- ") + "\n"
	if a.Link != "" {
		text += "\n" + a.Link + "\n"
	}
	m.SetBodyString(gomail.TypeTextPlain, text)
	var html bytes.Buffer
	if err := mailHTML.Execute(&html, map[string]any{"Title": title, "P": p}); err != nil {
		return Result{Err: err, Permanent: true}
	}
	m.AddAlternativeString(gomail.TypeTextHTML, html.String())

	host, portText, _ := net.SplitHostPort(ch.SMTP)
	port, _ := strconv.Atoi(portText)
	policy := map[string]gomail.TLSPolicy{"required": gomail.TLSMandatory, "opportunistic": gomail.TLSOpportunistic, "off": gomail.NoTLS}[ch.StartTLS]
	opts := []gomail.Option{gomail.WithPort(port), gomail.WithTLSPolicy(policy), gomail.WithTimeout(ch.Timeout)}
	if ch.Username != "" {
		opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover), gomail.WithUsername(ch.Username), gomail.WithPassword(ch.Password))
	}
	c, err := gomail.NewClient(host, opts...)
	if err != nil {
		return Result{Err: err, Permanent: true}
	}
	if err := c.DialAndSendWithContext(ctx, m); err != nil {
		r := Result{Err: err}
		var se *gomail.SendError
		if errors.As(err, &se) {
			r.Code = se.ErrorCode()
		}
		return r
	}
	return Result{Code: 250}
}
