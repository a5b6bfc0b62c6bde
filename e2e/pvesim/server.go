package pvesim

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand"
	"mime"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options configure an emulated Proxmox VE host or cluster. The zero value
// is a standalone node "pve" with local and local-lvm storage and an API
// token root@pam!pvesim.
type Options struct {
	// Listen is the loopback address to listen on (default 127.0.0.1:0).
	// Non-loopback addresses are refused: nothing leaves the loopback.
	Listen string

	// Nodes is the number of nodes (default 1 = standalone; >1 = a cluster
	// with /cluster/status quorum). NodeNames overrides the names
	// (default "pve" for one node, "pve1".."pveN" for a cluster).
	Nodes       int
	NodeNames   []string
	ClusterName string // default "pvesim" for clusters

	// Per node hardware facts.
	PVEVersion  string   // pve-manager version, default "9.1.2"
	CPUs        int      // default 8
	MemoryBytes int64    // default 64 GiB
	MemoryUsed  int64    // default 4 GiB
	Bridges     []string // default ["vmbr0"]
	DNSServers  []string // the node's resolv.conf nameservers (cloud-init default)
	DNSSearch   string   // the node's resolv.conf search domain (cloud-init default)

	// Storage capacities (bytes). Defaults: local 100 GiB, local-lvm 200 GiB.
	LocalBytes    int64
	LVMThinBytes  int64
	SharedStorage bool  // add "shared-nfs" (nfs, shared=1) visible on all nodes
	SharedBytes   int64 // default 1 TiB

	// Authentication.
	TokenID     string            // USER@REALM!TOKENID, default root@pam!pvesim
	TokenSecret string            // default a fixed UUID (see DefaultTokenSecret)
	Users       map[string]string // user@realm -> password for tickets; default root@pam: "pvesim"

	// Timing.
	TaskDuration  time.Duration            // default duration of a task's work (default 20ms)
	TaskDurations map[string]time.Duration // per task type (qmclone, qmcreate, download, ...)
	LockTimeout   time.Duration            // config lock timeout (PVE: 10s; default 10s)
	AgentDelay    time.Duration            // time from VM start until the guest agent answers
	AuthFailDelay time.Duration            // PVE delays 401 answers by 3s; default 0
	Latency       time.Duration            // delay added to every request

	// Seed makes MACs, UUIDs, PIDs and fault probabilities deterministic.
	Seed int64

	// AddressFor returns the IPv4 address (optionally with /prefix) the
	// guest agent reports for a running VM's first NIC.
	AddressFor func(vmid int, node string) (ip string, ok bool)
	// OnStart is called when a VM is started (before the start task ends);
	// an error fails the start task. OnStop is called when a VM stops.
	OnStart func(VMEvent) error
	OnStop  func(VMEvent)

	// OnApplianceBoot acts as the appliance when a started VM boots an
	// ISO (after OnStart). It runs in its own goroutine; ctx ends when the
	// VM is stopped or the server closes. nil: the appliance wrote
	// ev.Disk; an error: it failed and left the disk blank (applinit prints
	// FAILED). Either way the guest then powers off (see ApplianceReboots);
	// blocking until ctx ends is a hung installer. Without the hook a
	// stand-in waits ApplianceDuration (default 50ms), writes the only
	// blank disk (fails without one) and powers off.
	OnApplianceBoot   func(ctx context.Context, ev ApplianceBoot) error
	ApplianceDuration time.Duration
	// ApplianceReboots makes a successful appliance reboot instead of
	// powering off (appliance.after: reboot): with "reboot: 0" in the VM
	// config qemu exits as on a power-off, otherwise the VM boots the next
	// device of its boot order — the ISO again, if it is still first.
	ApplianceReboots bool

	// Log receives the JSON-lines request log (also kept in memory).
	Log io.Writer

	// DataDir holds uploaded and downloaded files (default: a temporary
	// directory removed by Close).
	DataDir string
	// AllowExternalDownloads lets download-url fetch non-loopback URLs.
	AllowExternalDownloads bool
	// DownloadRootCAs are trusted by download-url when verify-certificates=1
	// (in addition to the system roots).
	DownloadRootCAs *x509.CertPool
	// DisableImageChecks skips the untrusted-image checks of import content
	// (a .qcow2 must be qcow2 without backing file, a .vmdk must be VMDK, an
	// .ova must contain an .ovf), which PVE applies on upload and download.
	DisableImageChecks bool
}

// DefaultTokenSecret is the API token secret used when Options.TokenSecret is empty.
const DefaultTokenSecret = "8a1a6a4e-2b9d-4c55-9d5c-0c0ffee00001"

// VMEvent describes a VM that starts or stops, with its rendered cloud-init
// seed (what PVE writes to the NoCloud/ConfigDrive image).
type VMEvent struct {
	VMID          int
	Node          string
	Name          string
	Config        map[string]string
	MACs          []string // net0..netN MAC addresses (upper case, PVE form)
	UserData      string
	MetaData      string
	NetworkConfig string
	CIType        string // nocloud or configdrive2
	// Boot is the config key of the device the firmware boots (the first
	// of the boot order with media); ISO is its volid when it is an ISO
	// CD-ROM (an appliance boot).
	Boot string
	ISO  string
}

// Server is an emulated Proxmox VE API served over HTTPS on loopback.
type Server struct {
	opts   Options
	schema *apiSchema
	cert   *selfSigned
	ln     net.Listener
	srv    *http.Server
	url    string
	ownDir bool
	start  time.Time

	mu        sync.Mutex
	rng       *rand.Rand
	nodes     []*node
	stores    []*storageCfg
	insts     map[string]*storeInst // key node+"/"+sid, shared: "/"+sid
	vms       map[int]*vm
	tasks     []*task
	taskByID  map[string]*task
	locks     map[int]*flock
	nextPID   int
	ticketKey []byte

	faults *faults
	reqlog *requestLog

	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
}

// New starts an emulator on a loopback HTTPS listener.
func New(opts Options) (*Server, error) {
	schema, err := loadSchema()
	if err != nil {
		return nil, err
	}
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	host, _, err := net.SplitHostPort(opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("pvesim: listen address: %w", err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("pvesim: refusing to listen on non-loopback address %q", opts.Listen)
	}
	applyDefaults(&opts)
	durations := map[string]time.Duration{}
	for k, v := range opts.TaskDurations {
		durations[k] = v
	}
	opts.TaskDurations = durations
	s := &Server{
		opts:     opts,
		schema:   schema,
		rng:      rand.New(rand.NewSource(opts.Seed)),
		insts:    map[string]*storeInst{},
		vms:      map[int]*vm{},
		taskByID: map[string]*task{},
		locks:    map[int]*flock{},
		nextPID:  0x1000,
		start:    time.Now(),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.faults = newFaults(opts.Seed)
	s.reqlog = &requestLog{w: opts.Log}
	s.ticketKey = make([]byte, 32)
	s.rng.Read(s.ticketKey)
	if opts.DataDir == "" {
		dir, err := os.MkdirTemp("", "pvesim-")
		if err != nil {
			return nil, err
		}
		s.opts.DataDir = dir
		s.ownDir = true
	}
	s.initState()
	s.cert, err = newSelfSigned(s.nodes[0].name)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, err
	}
	s.ln = ln
	s.url = "https://" + ln.Addr().String()
	s.srv = &http.Server{
		Handler: s,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{s.cert.tlsCert},
			MinVersion:   tls.VersionTLS12,
			NextProtos:   []string{"http/1.1"},
		},
		// PVE's server speaks HTTP/1.1 only; this also keeps Hijack available.
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.srv.ServeTLS(ln, "", "")
	}()
	return s, nil
}

func applyDefaults(o *Options) {
	if o.Nodes <= 0 {
		o.Nodes = len(o.NodeNames)
		if o.Nodes == 0 {
			o.Nodes = 1
		}
	}
	if len(o.NodeNames) == 0 {
		if o.Nodes == 1 {
			o.NodeNames = []string{"pve"}
		} else {
			for i := 1; i <= o.Nodes; i++ {
				o.NodeNames = append(o.NodeNames, fmt.Sprintf("pve%d", i))
			}
		}
	}
	o.Nodes = len(o.NodeNames)
	if o.ClusterName == "" {
		o.ClusterName = "pvesim"
	}
	if o.PVEVersion == "" {
		o.PVEVersion = "9.1.2"
	}
	if o.CPUs == 0 {
		o.CPUs = 8
	}
	if o.MemoryBytes == 0 {
		o.MemoryBytes = 64 << 30
	}
	if o.MemoryUsed == 0 {
		o.MemoryUsed = 4 << 30
	}
	if len(o.Bridges) == 0 {
		o.Bridges = []string{"vmbr0"}
	}
	if o.LocalBytes == 0 {
		o.LocalBytes = 100 << 30
	}
	if o.LVMThinBytes == 0 {
		o.LVMThinBytes = 200 << 30
	}
	if o.SharedBytes == 0 {
		o.SharedBytes = 1 << 40
	}
	if o.TokenID == "" {
		o.TokenID = "root@pam!pvesim"
	}
	if o.TokenSecret == "" {
		o.TokenSecret = DefaultTokenSecret
	}
	if o.Users == nil {
		o.Users = map[string]string{"root@pam": "pvesim"}
	}
	if o.TaskDuration == 0 {
		o.TaskDuration = 20 * time.Millisecond
	}
	if o.ApplianceDuration == 0 {
		o.ApplianceDuration = 50 * time.Millisecond
	}
	if o.LockTimeout == 0 {
		o.LockTimeout = 10 * time.Second
	}
}

// URL returns the server's base URL (https://127.0.0.1:PORT).
func (s *Server) URL() string { return s.url }

// APIURL returns the API base URL (https://127.0.0.1:PORT/api2/json).
func (s *Server) APIURL() string { return s.url + "/api2/json" }

// Fingerprint returns the SHA-256 fingerprint of the server certificate in
// PVE's form (AB:CD:...).
func (s *Server) Fingerprint() string { return s.cert.fingerprint() }

// CertPEM returns the server certificate (self-signed, usable as a CA file).
func (s *Server) CertPEM() []byte { return append([]byte(nil), s.cert.pem...) }

// CertPool returns a pool trusting the server certificate.
func (s *Server) CertPool() *x509.CertPool { return s.cert.pool }

// TokenID returns the configured API token id (USER@REALM!ID).
func (s *Server) TokenID() string { return s.opts.TokenID }

// TokenSecret returns the configured API token secret.
func (s *Server) TokenSecret() string { return s.opts.TokenSecret }

// AuthHeader returns the Authorization header value for the API token.
func (s *Server) AuthHeader() string {
	return "PVEAPIToken=" + s.opts.TokenID + "=" + s.opts.TokenSecret
}

// Client returns an HTTP client that trusts the server certificate.
func (s *Server) Client() *http.Client {
	return &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: s.cert.pool},
		},
	}
}

// Close stops the server, cancels running tasks and removes the data dir
// when the server created it.
func (s *Server) Close() error {
	s.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	s.wg.Wait()
	if s.ownDir {
		os.RemoveAll(s.opts.DataDir)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// apiError is a failed API call: status, message (PVE die text, usually
// ending in a newline) and parameter errors.
type apiError struct {
	status int
	msg    string
	errors map[string]string
}

func (e *apiError) Error() string { return strings.TrimSpace(e.msg) }

// errf returns a 500 error with a PVE-style message (newline-terminated).
func errf(format string, a ...any) *apiError {
	return &apiError{status: 500, msg: fmt.Sprintf(format, a...) + "\n"}
}

// paramErr returns PVE's 400 parameter verification error.
func paramErr(errs map[string]string) *apiError {
	return &apiError{status: 400, msg: "Parameter verification failed.\n", errors: errs}
}

func paramErr1(key, msg string) *apiError { return paramErr(map[string]string{key: msg}) }

// reqCtx is one validated API call.
type reqCtx struct {
	r        *http.Request
	ep       *endpoint
	params   map[string]string
	raw      map[string]pval
	user     string // user@realm (token owner for tokens)
	authID   string // user@realm or user@realm!token (task owner)
	isToken  bool
	upload   *uploadedFile
	total    *int
	logUPID  string
	startReq time.Time
}

func (rc *reqCtx) has(k string) bool { _, ok := rc.params[k]; return ok }
func (rc *reqCtx) str(k string) string {
	return rc.params[k]
}
func (rc *reqCtx) int(k string, def int) int {
	v, ok := rc.params[k]
	if !ok {
		return def
	}
	n, err := strconv.Atoi(strings.TrimPrefix(v, "+"))
	if err != nil {
		return def
	}
	return n
}
func (rc *reqCtx) bool(k string, def bool) bool {
	v, ok := rc.params[k]
	if !ok {
		return def
	}
	return v == "1"
}

type handlerFunc func(s *Server, rc *reqCtx) (any, error)

const maxPostSize = 64 * 1024

// reqState ties a request to its log entry; the entry is logged right
// before the response is written, so a client never sees an answer whose
// request is not in the log yet.
type reqState struct {
	s      *Server
	entry  *LoggedRequest
	start  time.Time
	rc     *reqCtx
	logged bool
}

type stateKey struct{}

func (st *reqState) log(status int) {
	if st == nil || st.logged {
		return
	}
	st.logged = true
	st.entry.Status = status
	st.entry.Duration = time.Since(st.start)
	if st.rc != nil {
		st.entry.User = st.rc.authID
		st.entry.UPID = st.rc.logUPID
	}
	st.s.reqlog.add(st.entry)
}

func stateOf(r *http.Request) *reqState {
	st, _ := r.Context().Value(stateKey{}).(*reqState)
	return st
}

// ServeHTTP implements the PVE API HTTP server behaviour.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	st := &reqState{s: s, start: start, entry: &LoggedRequest{
		Time:   start.UTC(),
		Method: r.Method,
		Path:   r.URL.Path,
		Client: r.RemoteAddr,
	}}
	r = r.WithContext(context.WithValue(r.Context(), stateKey{}, st))
	status, _ := s.serve(w, r, st.entry)
	st.log(status)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, entry *LoggedRequest) (int, *reqCtx) {
	if d := s.opts.Latency + s.faults.latencyFor(r.Method, r.URL.Path); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
		}
	}
	switch r.Method {
	case "GET", "POST", "PUT", "DELETE":
	default:
		return s.writeError(w, r, &apiError{status: 501, msg: fmt.Sprintf("method '%s' not available", r.Method)}), nil
	}
	if len(r.TransferEncoding) > 0 {
		te := r.TransferEncoding[0]
		if strings.EqualFold(te, "chunked") {
			return s.writeError(w, r, &apiError{status: 501, msg: "chunked transfer encoding not supported"}), nil
		}
		return s.writeError(w, r, &apiError{status: 501, msg: fmt.Sprintf("Unknown transfer encoding '%s'", te)}), nil
	}
	const base = "/api2/json"
	path := r.URL.Path
	if path != base && !strings.HasPrefix(path, base+"/") {
		if strings.HasPrefix(path, "/api2/") {
			return s.writeError(w, r, &apiError{status: 501, msg: "no formatter for uri " + path}), nil
		}
		return s.writeError(w, r, &apiError{status: 501, msg: fmt.Sprintf("no such file '%s'", path)}), nil
	}
	rel := strings.TrimPrefix(path, base)
	if rel == "" {
		rel = "/"
	}

	rc := &reqCtx{r: r, startReq: time.Now()}
	stateOf(r).rc = rc
	isUpload := r.Method == "POST" && uploadPathRE.MatchString(rel)
	if aerr := s.authenticate(r, rel, rc, isUpload); aerr != nil {
		if s.opts.AuthFailDelay > 0 {
			time.Sleep(s.opts.AuthFailDelay)
		}
		drain(r)
		return s.writeError(w, r, aerr), rc
	}

	// request body
	raw := map[string]pval{}
	if r.ContentLength > 0 {
		ctype, boundary := parseContentType(r.Header.Get("Content-Type"))
		switch {
		case r.Method != "POST" && r.Method != "PUT":
			drain(r)
			return s.writeError(w, r, &apiError{status: 501, msg: fmt.Sprintf("Unexpected content for method '%s'", r.Method)}), rc
		case isUpload:
			if ctype != "multipart/form-data" || boundary == "" {
				drain(r)
				return s.writeError(w, r, &apiError{status: 501, msg: fmt.Sprintf("upload 'Content-Type '%s' not implemented\n", r.Header.Get("Content-Type"))}), rc
			}
			up, fields, err := s.receiveUpload(r)
			if err != nil {
				return s.writeError(w, r, &apiError{status: 501, msg: err.Error() + "\n"}), rc
			}
			rc.upload = up
			defer up.cleanup()
			for k, v := range fields {
				raw[k] = strVal(v)
			}
		case r.ContentLength > maxPostSize:
			drain(r)
			return s.writeError(w, r, &apiError{status: 501, msg: "for data too large"}), rc
		default:
			if ctype != "" && ctype != "application/x-www-form-urlencoded" && ctype != "application/json" {
				drain(r)
				return s.writeError(w, r, &apiError{status: 506, msg: fmt.Sprintf("upload 'Content-Type '%s' not implemented", r.Header.Get("Content-Type"))}), rc
			}
			body, err := io.ReadAll(io.LimitReader(r.Body, maxPostSize+1))
			if err != nil {
				return s.writeError(w, r, errf("unable to read request body - %v", err)), rc
			}
			if ctype == "application/json" {
				if err := decodeJSONParams(body, raw); err != nil {
					return s.writeError(w, r, errf("%v", err)), rc
				}
			} else {
				for k, v := range decodeURLEncoded(string(body)) {
					raw[k] = v
				}
			}
		}
	}
	for k, v := range decodeURLEncoded(r.URL.RawQuery) {
		raw[k] = v
	}
	delete(raw, "_dc")
	entry.setParams(raw)

	ep, pathParams := s.schema.route(r.Method, rel)
	if ep == nil {
		return s.writeError(w, r, &apiError{status: 501, msg: fmt.Sprintf("Method '%s %s' not implemented", r.Method, rel)}), rc
	}
	rc.ep = ep
	entry.Endpoint = ep.Method + " " + ep.Path
	pk := make([]string, 0, len(pathParams))
	for k := range pathParams {
		pk = append(pk, k)
	}
	sort.Strings(pk)
	for _, k := range pk {
		if v, ok := raw[k]; ok && v.s != pathParams[k] {
			return s.writeError(w, r, paramErr1(k, "duplicate parameter (already defined in URI) with conflicting values!")), rc
		}
		raw[k] = strVal(pathParams[k])
	}
	entry.setParams(raw)
	rc.raw = raw
	if rc.isToken && !ep.AllowToken {
		return s.writeError(w, r, &apiError{status: 403, msg: fmt.Sprintf("Permission check failed (URI '%s' not available with API token, need proper ticket.\n)\n", rel)}), rc
	}
	if f := s.faults.httpFault(r.Method, rel); f != nil {
		return s.writeError(w, r, f), rc
	}
	if errs := ep.validate(raw); errs != nil {
		return s.writeError(w, r, paramErr(errs)), rc
	}
	rc.params = canonicalParams(raw)
	if ep.ProxyTo != "" {
		if aerr := s.checkProxyNode(rc.params[ep.ProxyTo]); aerr != nil {
			return s.writeError(w, r, aerr), rc
		}
	}
	h := handlers[ep.Method+" "+ep.Path]
	if h == nil {
		return s.writeError(w, r, &apiError{status: 501, msg: fmt.Sprintf("Method '%s %s' not implemented", r.Method, rel)}), rc
	}
	data, err := h(s, rc)
	if err != nil {
		var ae *apiError
		if !errors.As(err, &ae) {
			ae = &apiError{status: 500, msg: err.Error() + "\n"}
		}
		return s.writeError(w, r, ae), rc
	}
	if up, ok := data.(upidString); ok {
		rc.logUPID = string(up)
	}
	return s.writeData(w, r, data, rc.total), rc
}

// upidString marks a handler result that is a task UPID (for the log).
type upidString string

func canonicalParams(raw map[string]pval) map[string]string {
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		if v.kind == kindNull {
			continue
		}
		out[k] = v.s
	}
	return out
}

func drain(r *http.Request) {
	if r.Body != nil {
		io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
	}
}

func parseContentType(h string) (string, string) {
	if h == "" {
		return "", ""
	}
	mt, params, err := mime.ParseMediaType(h)
	if err != nil {
		return strings.ToLower(strings.TrimSpace(strings.SplitN(h, ";", 2)[0])), ""
	}
	return mt, params["boundary"]
}

// decodeURLEncoded mirrors AnyEvent.pm decode_urlencoded: pairs split on &
// and ;, '+' is a space, repeated keys are joined with NUL.
func decodeURLEncoded(data string) map[string]pval {
	res := map[string]pval{}
	if data == "" {
		return res
	}
	for _, kv := range strings.FieldsFunc(data, func(r rune) bool { return r == '&' || r == ';' }) {
		k, v, hasV := strings.Cut(kv, "=")
		k = unescapeForm(k)
		if !hasV {
			res[k] = pval{kind: kindNull}
			continue
		}
		if i := strings.IndexByte(v, '='); i >= 0 {
			v = v[:i] // Perl split(/=/) keeps only the second field
		}
		v = unescapeForm(v)
		if old, ok := res[k]; ok && old.kind == kindString {
			v = old.s + "\x00" + v
		}
		res[k] = strVal(v)
	}
	return res
}

func unescapeForm(s string) string {
	s = strings.ReplaceAll(s, "+", " ")
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			n, _ := strconv.ParseUint(s[i+1:i+3], 16, 8)
			b.WriteByte(byte(n))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// decodeJSONParams decodes a JSON object body into parameters, keeping the
// JSON types PVE's type checks distinguish.
func decodeJSONParams(body []byte, out map[string]pval) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("malformed JSON string: %v", err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil // PVE ignores non-object JSON bodies
	}
	for k, x := range obj {
		switch t := x.(type) {
		case nil:
			out[k] = pval{kind: kindNull}
		case string:
			out[k] = strVal(t)
		case bool:
			if t {
				out[k] = pval{kind: kindBool, s: "1"}
			} else {
				out[k] = pval{kind: kindBool, s: "0"}
			}
		case json.Number:
			out[k] = pval{kind: kindNumber, s: perlNumberString(string(t))}
		case map[string]any:
			out[k] = pval{kind: kindObject, s: "HASH"}
		case []any:
			out[k] = pval{kind: kindArray, s: "ARRAY"}
		}
	}
	return nil
}

// perlNumberString stringifies a JSON number as Perl would.
func perlNumberString(s string) string {
	if isInteger(s) {
		return s
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return s
	}
	return perlNum(f)
}

// writeData writes a successful {"data": ...} response.
func (s *Server) writeData(w http.ResponseWriter, r *http.Request, data any, total *int) int {
	stateOf(r).log(200)
	if up, ok := data.(upidString); ok {
		data = string(up)
	}
	body := map[string]any{"data": data}
	if total != nil {
		body["total"] = *total
	}
	buf := encodeJSON(body)
	h := w.Header()
	h.Set("Content-Type", "application/json;charset=UTF-8")
	h.Set("Cache-Control", "max-age=0")
	h.Set("Pragma", "no-cache")
	h.Set("Expires", time.Now().UTC().Format(http.TimeFormat))
	h.Set("Server", "pve-api-daemon/3.0")
	h.Set("Content-Length", strconv.Itoa(len(buf)))
	w.WriteHeader(200)
	w.Write(buf)
	return 200
}

func encodeJSON(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return []byte(`{"data":null}`)
	}
	return bytes.TrimRight(buf.Bytes(), "\n")
}

// writeError writes an error the way the PVE formatter does: the message's
// first line as the HTTP reason phrase, {"data":null,"message":...} (plus
// "errors" for parameter errors) as body, and the connection closed.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, e *apiError) int {
	body := map[string]any{"data": nil}
	if len(e.errors) > 0 {
		body["errors"] = e.errors
	}
	if e.msg != "" {
		body["message"] = e.msg
	}
	s.writeRaw(w, r, e.status, e.msg, encodeJSON(body))
	return e.status
}

// writeRaw writes a response with a custom reason phrase by hijacking the
// connection (net/http always uses the standard phrase). PVE closes the
// connection after every error response, and so does this.
func (s *Server) writeRaw(w http.ResponseWriter, r *http.Request, status int, msg string, body []byte) {
	stateOf(r).log(status)
	reason := strings.SplitN(strings.TrimRight(msg, "\n"), "\n", 2)[0]
	if reason == "" {
		reason = http.StatusText(status)
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		w.Header().Set("Content-Type", "application/json;charset=UTF-8")
		w.Header().Set("Connection", "close")
		w.WriteHeader(status)
		w.Write(body)
		return
	}
	conn, bufrw, err := hj.Hijack()
	if err != nil {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", status, reason)
	now := time.Now().UTC().Format(http.TimeFormat)
	fmt.Fprintf(&b, "Cache-Control: max-age=0\r\nConnection: close\r\nDate: %s\r\nPragma: no-cache\r\nServer: pve-api-daemon/3.0\r\n", now)
	fmt.Fprintf(&b, "Content-Length: %d\r\nContent-Type: application/json;charset=UTF-8\r\nExpires: %s\r\n\r\n", len(body), now)
	bufrw.WriteString(b.String())
	bufrw.Write(body)
	bufrw.Flush()
	// let the client read the response before the close
	go func() {
		defer conn.Close()
		if tc, ok := conn.(interface{ CloseWrite() error }); ok {
			tc.CloseWrite()
		}
		conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		io.Copy(io.Discard, bufio.NewReader(conn))
	}()
}

// checkProxyNode mirrors pveproxy's proxying to the node a call is for.
func (s *Server) checkProxyNode(name string) *apiError {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name == "localhost" {
		return nil
	}
	n := s.nodeByName(name)
	if n == nil {
		return errf("hostname lookup '%s' failed - failed to get address info for: %s: Name or service not known", name, name)
	}
	if !n.online && n != s.nodes[0] {
		return &apiError{status: 595, msg: "Errors during connection establishment, proxy handshake: No route to host\n"}
	}
	return nil
}
