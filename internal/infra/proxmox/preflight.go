package proxmox

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/opencsp/installer/internal/config"
	"github.com/opencsp/installer/internal/infra"
)

// Space the images need beyond the VM disk: the image file on import
// storage and the template's disk (cloud images are < 1 GiB as files,
// 2-3.5 GiB virtual).
const (
	imageFileBytes    = 1 << 30
	templateDiskBytes = 4 << 30
)

// minVersion is the oldest PVE the installer supports: import content and
// import-from need 8.0.
const minMajor = 8

// Preflight checks the API, the token, the version, nodes, storages,
// bridges and capacity, and reports every problem with what to fix. It
// returns an error only when it could not finish checking for reasons that
// are not a finding (a cancelled context).
func (p *Provider) Preflight(ctx context.Context) (infra.Problems, error) {
	var ps infra.Problems
	add := func(check, format string, args ...any) {
		ps = append(ps, infra.Problem{Check: check, Msg: fmt.Sprintf(format, args...)})
	}

	if p.secretErr != nil {
		add("proxmox api", "not checked: the token secret %s cannot be read (%v)", p.px.TokenSecret, p.secretErr)
		return ps, nil
	}
	if p.appliance() && p.px.Storage.ISO == "" {
		add("storage iso", "infrastructure.proxmox.storage.iso is not set; managementVM.provision.method appliance uploads the ISO there (a storage with content iso, e.g. local)")
	}
	var ver struct {
		Version string `json:"version"`
		Release string `json:"release"`
	}
	if err := p.api.get(ctx, "/version", nil, &ver); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		check, format, args := p.connectionProblem(err)
		add(check, format, args...)
		return ps, nil // nothing else can be checked
	}
	if major, _, _ := strings.Cut(ver.Version, "."); atoiOr(major, 0) < minMajor {
		add("proxmox version", "Proxmox VE %s is too old: the installer needs %d.0 or newer (import content and import-from); upgrade the cluster", ver.Version, minMajor)
	}

	nodes, quorate, err := p.describe(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		add("proxmox nodes", "cannot list nodes: %v", err)
		return ps, nil
	}
	if !quorate {
		add("cluster quorum", "the cluster is not quorate: PVE refuses changes without quorum; bring nodes back online (pvecm status)")
	}
	allowed := p.allowedNodes(nodes)
	byName := map[string]infra.Node{}
	for _, n := range nodes {
		byName[n.Name] = n
	}
	for _, name := range p.wantedNodes() {
		n, ok := byName[name]
		switch {
		case !ok:
			add("node "+name, "node %s does not exist (nodes: %s); fix infrastructure.proxmox.nodes or managementVM.node", name, strings.Join(nodeNames(nodes), ", "))
		case !n.Online:
			add("node "+name, "node %s is offline; start it or remove it from infrastructure.proxmox.nodes", name)
		}
	}
	if len(allowed) == 0 {
		add("nodes", "no allowed node is online")
		return ps, nil
	}

	// What an earlier run created needs no space any more.
	vms, err := p.vms(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		add("proxmox api", "cannot list VMs: %v", err)
		return ps, nil
	}
	vmExists := false
	templatesOn := map[string]int{}
	for _, r := range vms {
		switch {
		case !r.hasTag(p.cfg.Tag()):
		case bool(r.Template):
			templatesOn[r.Node]++
		case r.Name == p.cfg.ManagementVM.Name:
			vmExists = true
		}
	}

	// The ISO the VM is to boot, unless the VM exists (it may be installed
	// and the ISO gone since).
	isoBytes := int64(0)
	if p.appliance() && !vmExists {
		fi, err := os.Stat(p.cfg.ApplianceISO())
		switch {
		case err != nil:
			add("appliance.iso", "%s cannot be read (%v); build it with `opencsp image iso` (same config) or set appliance.iso to the ISO's path", p.cfg.ApplianceISO(), errors.Unwrap(err))
		case fi.IsDir():
			add("appliance.iso", "%s is a directory; set appliance.iso to the ISO file", p.cfg.ApplianceISO())
		default:
			isoBytes = fi.Size()
		}
	}

	// Storages: per node, each role's content type and space.
	for _, n := range allowed {
		need := p.storageNeeds(templatesOn[n.Name], vmExists, isoBytes)
		for _, st := range need {
			s, ok := findStorage(n, st.name)
			check := "storage " + st.name
			switch {
			case !ok:
				add(check, "storage %s does not exist on node %s (it has: %s); create it or fix infrastructure.proxmox.storage.%s",
					st.name, n.Name, strings.Join(storageNames(n), ", "), st.roles[0])
				continue
			case !s.Enabled:
				add(check, "storage %s is disabled; enable it (Datacenter > Storage)", st.name)
				continue
			case !s.Active:
				add(check, "storage %s is not active on node %s; check that it is mounted/online there", st.name, n.Name)
				continue
			}
			for _, c := range st.content {
				if !s.Allows(c) {
					add(check, "storage %s does not allow content %q (it allows: %s), needed for %s; add it: pvesm set %s --content %s",
						st.name, c, strings.Join(s.Content, ","), strings.Join(st.roles, "/"), st.name, strings.Join(append(slices.Clone(s.Content), c), ","))
				}
			}
			if s.Avail < st.bytes && st.bytes > 0 {
				add(check, "storage %s on node %s has %s free, the install needs %s; free space or choose another storage",
					st.name, n.Name, gib(s.Avail), gib(st.bytes))
			}
		}
		if n.Bridges != nil && !slices.Contains(n.Bridges, p.px.Network.Bridge) {
			add("bridge "+p.px.Network.Bridge, "bridge %s does not exist on node %s (bridges: %s); fix infrastructure.proxmox.network.bridge or create it",
				p.px.Network.Bridge, n.Name, strings.Join(n.Bridges, ", "))
		}
	}

	// Capacity: can the VM be placed? Not when it exists already (it then
	// uses the memory we would look for).
	if !vmExists {
		if _, err := infra.Place(nodes, p.placementRequest()); err != nil {
			add("capacity", "%v", err)
		}
	}
	return ps, nil
}

// connectionProblem explains why the very first call failed.
func (p *Provider) connectionProblem(err error) (check, msg string, args []any) {
	if u, ok := asUntrusted(err); ok {
		return "tls", "%v", []any{u}
	}
	switch s := statusOf(err); {
	case isUnauthorized(err):
		return "proxmox token", "token rejected by %s (HTTP %d): check infrastructure.proxmox.tokenID %q and the secret %s, and that the token exists and is not expired (pveum user token list)",
			[]any{p.px.Endpoint, s, p.px.TokenID, p.px.TokenSecret}
	case s != 0:
		return "proxmox api", "%s answered %v", []any{p.px.Endpoint, err}
	}
	return "proxmox api", "cannot reach %s: %v; check infrastructure.proxmox.endpoint and that port 8006 is reachable from here", []any{p.px.Endpoint, err}
}

// storageNeed is one storage with everything the config uses it for.
type storageNeed struct {
	name    string
	roles   []string
	content []string
	bytes   int64
}

// storageNeeds lists the storages with the space still needed, given the
// templates on the node and whether the VM exists already.
func (p *Provider) storageNeeds(templates int, vmExists bool, isoBytes int64) []storageNeed {
	nImages := int64(max(0, len(p.cfg.Images)-templates))
	if p.appliance() {
		nImages = 0 // the VM boots the ISO: no templates, no image files
	}
	disk := int64(p.cfg.ManagementVM.DiskGiB) << 30
	if vmExists {
		disk = 0
	}
	var out []storageNeed
	add := func(name, role, content string, bytes int64) {
		for i := range out {
			if out[i].name == name {
				out[i].roles = append(out[i].roles, role)
				if !slices.Contains(out[i].content, content) {
					out[i].content = append(out[i].content, content)
				}
				out[i].bytes += bytes
				return
			}
		}
		out = append(out, storageNeed{name: name, roles: []string{role}, content: []string{content}, bytes: bytes})
	}
	st := p.px.Storage
	if p.appliance() {
		add(st.Disks, "disks", "images", disk)
		if st.ISO != "" && !vmExists {
			add(st.ISO, "iso", "iso", isoBytes)
		}
		return out
	}
	add(st.Templates, "templates", "images", nImages*templateDiskBytes)
	add(st.Disks, "disks", "images", disk)
	add(st.Images, "images", "import", nImages*imageFileBytes)
	if st.ISO != "" {
		add(st.ISO, "iso", "iso", 0)
	}
	return out
}

// appliance: the management VM is installed from the appliance ISO.
func (p *Provider) appliance() bool {
	return p.cfg.ManagementVM.Provision.Method == config.ProvisionAppliance
}

// describe lists the nodes with their storages and bridges, and whether
// the cluster is quorate (a standalone node always is).
func (p *Provider) describe(ctx context.Context) ([]infra.Node, bool, error) {
	var status []struct {
		Type    string   `json:"type"`
		Quorate jsonBool `json:"quorate"`
	}
	quorate := true
	if err := p.retry(ctx, "cluster status", func() error { return p.api.get(ctx, "/cluster/status", nil, &status) }); err != nil {
		return nil, false, err
	}
	for _, s := range status {
		if s.Type == "cluster" {
			quorate = bool(s.Quorate)
		}
	}
	nodes, err := p.Nodes(ctx)
	return nodes, quorate, err
}

// Nodes describes every node: resources, storages and bridges of the
// online ones.
func (p *Provider) Nodes(ctx context.Context) ([]infra.Node, error) {
	var list []struct {
		Node   string  `json:"node"`
		Status string  `json:"status"`
		MaxCPU jsonInt `json:"maxcpu"`
		CPU    float64 `json:"cpu"`
		MaxMem int64   `json:"maxmem"`
		Mem    int64   `json:"mem"`
	}
	if err := p.retry(ctx, "list nodes", func() error { return p.api.get(ctx, "/nodes", nil, &list) }); err != nil {
		return nil, err
	}
	var nodes []infra.Node
	for _, l := range list {
		n := infra.Node{Name: l.Node, Online: l.Status == "online", CPUs: int(l.MaxCPU), CPUUsed: l.CPU,
			MemTotal: l.MaxMem, MemUsed: l.Mem}
		if n.Online {
			var err error
			if n.Storages, err = p.storages(ctx, n.Name); err != nil {
				return nil, err
			}
			if n.Bridges, err = p.bridges(ctx, n.Name); err != nil {
				return nil, err
			}
			n.Reachable = true
		}
		nodes = append(nodes, n)
	}
	slices.SortFunc(nodes, func(a, b infra.Node) int { return strings.Compare(a.Name, b.Name) })
	return nodes, nil
}

func (p *Provider) storages(ctx context.Context, node string) ([]infra.Storage, error) {
	var list []struct {
		Storage string   `json:"storage"`
		Type    string   `json:"type"`
		Content string   `json:"content"`
		Shared  jsonBool `json:"shared"`
		Active  jsonBool `json:"active"`
		Enabled jsonBool `json:"enabled"`
		Total   int64    `json:"total"`
		Avail   int64    `json:"avail"`
	}
	path := "/nodes/" + node + "/storage"
	if err := p.retry(ctx, "list storages of "+node, func() error { return p.api.get(ctx, path, nil, &list) }); err != nil {
		return nil, err
	}
	out := make([]infra.Storage, 0, len(list))
	for _, l := range list {
		out = append(out, infra.Storage{Name: l.Storage, Type: l.Type, Content: strings.Split(l.Content, ","),
			Shared: bool(l.Shared), Active: bool(l.Active), Enabled: bool(l.Enabled), Total: l.Total, Avail: l.Avail})
	}
	return out, nil
}

// bridges lists a node's Linux/OVS bridges. nil means "unknown": an API
// without the network endpoint (501) skips the bridge checks rather than
// failing them.
func (p *Provider) bridges(ctx context.Context, node string) ([]string, error) {
	var list []struct {
		Iface string `json:"iface"`
		Type  string `json:"type"`
	}
	path := "/nodes/" + node + "/network"
	err := p.retry(ctx, "list bridges of "+node, func() error {
		return p.api.get(ctx, path, map[string]string{"type": "any_bridge"}, &list)
	})
	if statusOf(err) == http.StatusNotImplemented {
		p.log.Warn("the API does not list networks; bridge checks skipped", "node", node)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := []string{}
	for _, l := range list {
		out = append(out, l.Iface)
	}
	return out, nil
}

// wantedNodes are the nodes the config names explicitly.
func (p *Provider) wantedNodes() []string {
	out := slices.Clone(p.px.Nodes)
	if n := p.cfg.ManagementVM.Node; n != "" && !slices.Contains(out, n) {
		out = append(out, n)
	}
	return out
}

// allowedNodes: the configured nodes (all when none are named) that are online.
func (p *Provider) allowedNodes(nodes []infra.Node) []infra.Node {
	var out []infra.Node
	for _, n := range nodes {
		if n.Online && (len(p.px.Nodes) == 0 || slices.Contains(p.px.Nodes, n.Name)) {
			out = append(out, n)
		}
	}
	return out
}

func (p *Provider) placementRequest() infra.PlacementRequest {
	m := p.cfg.ManagementVM
	req := infra.PlacementRequest{Allowed: p.px.Nodes, Pinned: m.Node, Cores: m.Cores, MemoryMiB: m.MemoryMiB,
		Storage: p.px.Storage.Disks, Bridge: p.px.Network.Bridge}
	if req.Pinned == "" && len(p.px.Nodes) == 1 {
		req.Pinned = p.px.Nodes[0]
	}
	return req
}

func findStorage(n infra.Node, name string) (infra.Storage, bool) {
	i := slices.IndexFunc(n.Storages, func(s infra.Storage) bool { return s.Name == name })
	if i < 0 {
		return infra.Storage{}, false
	}
	return n.Storages[i], true
}

func storageNames(n infra.Node) []string {
	var out []string
	for _, s := range n.Storages {
		out = append(out, s.Name)
	}
	return out
}

func nodeNames(nodes []infra.Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Name)
	}
	return out
}

func gib(b int64) string { return strconv.FormatFloat(float64(b)/(1<<30), 'f', 1, 64) + " GiB" }

func atoiOr(s string, def int) int {
	if n, err := strconv.Atoi(s); err == nil {
		return n
	}
	return def
}
