package pvesim

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

var uploadPathRE = regexp.MustCompile(`^/nodes/([^/]+)/storage/([^/]+)/upload$`)

const ticketLifetime = 2 * time.Hour

// authenticate mirrors PVE::HTTPServer::auth_handler: API token from the
// Authorization header, or a ticket from the PVEAuthCookie cookie (or the
// Authorization header) plus CSRFPreventionToken on writes.
func (s *Server) authenticate(r *http.Request, rel string, rc *reqCtx, isUpload bool) *apiError {
	auth := r.Header.Get("Authorization")
	if (rel == "/access/ticket" && (r.Method == "GET" || r.Method == "POST")) ||
		(rel == "/access/domains" && r.Method == "GET") {
		// no authentication required; a token header still marks the call
		// as token based (and the ticket call does not allow tokens)
		rc.isToken = extractAuthValue(auth, "PVEAPIToken") != ""
		return nil
	}
	ticket := cookieValue(r.Header.Values("Cookie"), "PVEAuthCookie")
	if ticket == "" {
		ticket = extractAuthValue(auth, "PVEAuthCookie")
	}
	if ticket == "" {
		if tok := extractAuthValue(auth, "PVEAPIToken"); tok != "" {
			id, err := s.verifyToken(tok)
			if err != nil {
				return err
			}
			rc.isToken = true
			rc.authID = id
			rc.user = strings.SplitN(id, "!", 2)[0]
			return nil
		}
		return &apiError{status: 401, msg: "No ticket\n"}
	}
	user, err := s.verifyTicket(ticket)
	if err != nil {
		return err
	}
	rc.user, rc.authID = user, user
	if r.Method != "GET" && !isUpload {
		if !s.verifyCSRF(user, r.Header.Get("CSRFPreventionToken")) {
			return &apiError{status: 401, msg: "Permission denied - invalid csrf token\n"}
		}
	}
	return nil
}

// extractAuthValue mirrors PVE::APIServer::Formatter::extract_auth_value.
func extractAuthValue(header, name string) string {
	if header == "" {
		return ""
	}
	re := regexp.MustCompile(`(?:^|\s)` + regexp.QuoteMeta(name) + `(?:=|\s)(\S+)$`)
	m := re.FindStringSubmatch(header)
	if m == nil {
		return ""
	}
	v := m[1]
	if strings.HasPrefix(v, "PVE%3A") {
		if u, err := url.QueryUnescape(v); err == nil {
			v = u
		}
	}
	return v
}

func cookieValue(headers []string, name string) string {
	for _, h := range headers {
		for _, part := range strings.Split(h, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
			if ok && k == name {
				if strings.HasPrefix(v, "PVE%3A") {
					if u, err := url.QueryUnescape(v); err == nil {
						v = u
					}
				}
				return v
			}
		}
	}
	return ""
}

// verifyToken mirrors PVE::AccessControl::verify_token.
func (s *Server) verifyToken(tok string) (string, *apiError) {
	i := strings.LastIndex(tok, "=")
	if i < 0 {
		return "", &apiError{status: 401, msg: "no tokenid specified\n"}
	}
	id, secret := tok[:i], tok[i+1:]
	user, name, ok := strings.Cut(id, "!")
	if !ok || user == "" || name == "" {
		return "", &apiError{status: 401, msg: fmt.Sprintf("'%s' is not a valid token ID\n", id)}
	}
	wantUser, wantName, _ := strings.Cut(s.opts.TokenID, "!")
	if _, known := s.opts.Users[user]; !known && user != wantUser {
		return "", &apiError{status: 401, msg: fmt.Sprintf("no such user ('%s')\n", user)}
	}
	if user != wantUser || name != wantName {
		return "", &apiError{status: 401, msg: fmt.Sprintf("no such token '%s' for user '%s'\n", name, user)}
	}
	if subtle.ConstantTimeCompare([]byte(secret), []byte(s.opts.TokenSecret)) != 1 {
		return "", &apiError{status: 401, msg: "invalid token value!\n"}
	}
	return id, nil
}

func (s *Server) sign(parts ...string) string {
	m := hmac.New(sha256.New, s.ticketKey)
	m.Write([]byte(strings.Join(parts, "\x00")))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// newTicket returns a PVE-style ticket "PVE:user:HEXTIME::signature" and
// its CSRF prevention token "HEXTIME:signature".
func (s *Server) newTicket(user string) (ticket, csrf string) {
	ts := fmt.Sprintf("%08X", time.Now().Unix())
	ticket = "PVE:" + user + ":" + ts + "::" + s.sign("ticket", user, ts)
	csrf = ts + ":" + strings.TrimRight(s.sign("csrf", user, ts), "=")
	return ticket, csrf
}

func (s *Server) verifyTicket(ticket string) (string, *apiError) {
	bad := &apiError{status: 401, msg: "permission denied - invalid PVE ticket\n"}
	parts := strings.SplitN(ticket, ":", 5)
	if len(parts) != 5 || parts[0] != "PVE" || parts[3] != "" {
		return "", bad
	}
	user, ts, sig := parts[1], parts[2], parts[4]
	if !hmac.Equal([]byte(sig), []byte(s.sign("ticket", user, ts))) {
		return "", bad
	}
	t, err := strconv.ParseInt(ts, 16, 64)
	if err != nil {
		return "", bad
	}
	age := time.Since(time.Unix(t, 0))
	if age > ticketLifetime || age < -5*time.Minute {
		return "", bad
	}
	return user, nil
}

func (s *Server) verifyCSRF(user, token string) bool {
	ts, sig, ok := strings.Cut(token, ":")
	if !ok {
		return false
	}
	if !hmac.Equal([]byte(sig), []byte(strings.TrimRight(s.sign("csrf", user, ts), "="))) {
		return false
	}
	t, err := strconv.ParseInt(ts, 16, 64)
	if err != nil {
		return false
	}
	age := time.Since(time.Unix(t, 0))
	return age <= ticketLifetime && age >= -5*time.Minute
}

// handleTicket implements POST /access/ticket.
func handleTicket(s *Server, rc *reqCtx) (any, error) {
	username := rc.str("username")
	if realm := rc.str("realm"); realm != "" && !strings.Contains(username, "@") {
		username += "@" + realm
	}
	fail := &apiError{status: 401, msg: "authentication failure\n"}
	if !strings.Contains(username, "@") {
		return nil, fail
	}
	pw := rc.str("password")
	ok := false
	if want, known := s.opts.Users[username]; known && subtle.ConstantTimeCompare([]byte(want), []byte(pw)) == 1 {
		ok = true
	} else if strings.HasPrefix(pw, "PVE:") {
		if u, err := s.verifyTicket(pw); err == nil && u == username {
			ok = true
		}
	}
	if !ok {
		if s.opts.AuthFailDelay > 0 {
			time.Sleep(s.opts.AuthFailDelay)
		}
		return nil, fail
	}
	rc.authID = username
	ticket, csrf := s.newTicket(username)
	res := map[string]any{
		"username":            username,
		"ticket":              ticket,
		"CSRFPreventionToken": csrf,
		"cap": map[string]any{
			"vms":     map[string]int{"VM.Allocate": 1, "VM.Audit": 1, "VM.Clone": 1, "VM.Config.Disk": 1, "VM.PowerMgmt": 1},
			"storage": map[string]int{"Datastore.Allocate": 1, "Datastore.AllocateSpace": 1, "Datastore.Audit": 1},
			"nodes":   map[string]int{"Sys.Audit": 1, "Sys.Modify": 1},
		},
	}
	if len(s.nodes) > 1 {
		res["clustername"] = s.opts.ClusterName
	}
	return res, nil
}
