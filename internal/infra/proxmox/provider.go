// Package proxmox is the Proxmox VE provider: it turns the stages' requests
// (templates, VMs, nodes) into PVE API calls through go-proxmox, waits on
// every task, retries what PVE makes flaky (lock timeouts, 5xx, VMID races)
// and finds every resource again by name and tag instead of creating twice.
package proxmox

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/infra"
)

// Options tune timing; zero values take defaults (tests shorten them).
type Options struct {
	Poll     Backoff       // task status polling; default 200ms..2s
	Retry    Backoff       // retries of lock timeouts and 5xx; default 1s..10s
	Attempts int           // attempts per retried operation; default 6
	Timeout  time.Duration // per HTTP request (not uploads); default 60s
	Log      *slog.Logger
}

func (o Options) withDefaults() Options {
	o.Poll.Initial = cmp.Or(o.Poll.Initial, 200*time.Millisecond)
	o.Poll.Max = cmp.Or(o.Poll.Max, 2*time.Second)
	o.Retry.Initial = cmp.Or(o.Retry.Initial, time.Second)
	o.Retry.Max = cmp.Or(o.Retry.Max, 10*time.Second)
	o.Attempts = cmp.Or(o.Attempts, 6)
	o.Timeout = cmp.Or(o.Timeout, 60*time.Second)
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// Provider implements infra.Provider for Proxmox VE.
type Provider struct {
	secretErr  error
	cfg        *config.Config
	px         *config.Proxmox
	api        *api
	uploadHTTP *http.Client // like api.http without the overall timeout
	opts       Options
	log        *slog.Logger
}

var _ infra.Provider = (*Provider)(nil)

// New builds the provider from the config: token auth, TLS as configured.
// It does not contact the API; Preflight does.
func New(cfg *config.Config, opts Options) (*Provider, error) {
	px := cfg.Infrastructure.Proxmox
	if px == nil {
		return nil, fmt.Errorf("infrastructure.proxmox is not set")
	}
	// An unresolvable secret is preflight's finding (local checks name
	// it), not a reason to refuse building the provider.
	secret, secretErr := cfg.Secret(px.TokenSecret)
	tc, err := tlsConfig(px.TLS, cfg.ResolvePath)
	if err != nil {
		return nil, fmt.Errorf("proxmox TLS: %w", err)
	}
	opts = opts.withDefaults()
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tc
	rt := statusTransport{next: transport}
	base := strings.TrimSuffix(px.Endpoint, "/")
	if !strings.HasSuffix(base, "/api2/json") {
		base += "/api2/json"
	}
	return &Provider{
		secretErr:  secretErr,
		cfg:        cfg,
		px:         px,
		api:        newAPI(base, &http.Client{Transport: rt, Timeout: opts.Timeout}, px.TokenID, secret),
		uploadHTTP: &http.Client{Transport: rt},
		opts:       opts,
		log:        opts.Log,
	}, nil
}

// resource is one entry of /cluster/resources.
type resource struct {
	ID       string   `json:"id"`
	Type     string   `json:"type"`
	Node     string   `json:"node"`
	Name     string   `json:"name"`
	VMID     int      `json:"vmid"`
	Tags     string   `json:"tags"`
	Template jsonBool `json:"template"`
	Status   string   `json:"status"`
	Lock     string   `json:"lock"`
	MaxCPU   float64  `json:"maxcpu"`
	CPU      float64  `json:"cpu"`
	MaxMem   int64    `json:"maxmem"`
	Mem      int64    `json:"mem"`
}

func (r resource) hasTag(tag string) bool {
	return slices.Contains(strings.FieldsFunc(r.Tags, func(c rune) bool { return c == ';' || c == ',' || c == ' ' }), tag)
}

// vms lists the cluster's VMs (the identity lookups go through here).
func (p *Provider) vms(ctx context.Context) ([]resource, error) {
	var rs []resource
	err := p.retry(ctx, "list cluster VMs", func() error {
		return p.api.get(ctx, "/cluster/resources", map[string]string{"type": "vm"}, &rs)
	})
	return rs, err
}

// findByName returns the VMs with this name and tag (node "" = any node).
func (p *Provider) findByName(ctx context.Context, name, tag, node string) ([]resource, error) {
	rs, err := p.vms(ctx)
	if err != nil {
		return nil, err
	}
	var out []resource
	for _, r := range rs {
		if r.Type == "qemu" && r.Name == name && r.hasTag(tag) && (node == "" || r.Node == node) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b resource) int { return a.VMID - b.VMID })
	return out, nil
}

// FindTemplate looks a template up by name and tag on a node. A VM with
// that identity that is not (yet) a template does not count.
func (p *Provider) FindTemplate(ctx context.Context, name, tag, node string) (infra.Template, bool, error) {
	rs, err := p.findByName(ctx, name, tag, node)
	if err != nil {
		return infra.Template{}, false, err
	}
	for _, r := range rs {
		if bool(r.Template) {
			return infra.Template{ID: r.VMID, Node: r.Node, Name: r.Name}, true, nil
		}
	}
	return infra.Template{}, false, nil
}

// FindVM looks a (non-template) VM up by name and tag anywhere.
func (p *Provider) FindVM(ctx context.Context, name, tag string) (infra.VM, bool, error) {
	rs, err := p.findByName(ctx, name, tag, "")
	if err != nil {
		return infra.VM{}, false, err
	}
	for _, r := range rs {
		if !bool(r.Template) {
			return infra.VM{ID: r.VMID, Node: r.Node, Name: r.Name, Running: r.Status == "running"}, true, nil
		}
	}
	return infra.VM{}, false, nil
}

// nextID asks PVE for a free VMID (not atomic: callers retry on "already exists").
func (p *Provider) nextID(ctx context.Context) (int, error) {
	var id jsonInt
	err := p.retry(ctx, "get next VMID", func() error {
		return p.api.get(ctx, "/cluster/nextid", nil, &id)
	})
	return int(id), err
}
